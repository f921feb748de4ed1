# Unit tests of the storage module's blob store on a temporary directory
# (no Redis, no network).
nimbus_unit_test(test_blobstore
                 SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/test_blobstore.c
                 LIBS nimbus_storage nimbus_common)
# The same tests with O_DIRECT turned off: the page-cache path that a
# filesystem without O_DIRECT (tmpfs) takes.
add_test(NAME test_blobstore_plain COMMAND test_blobstore)
set_tests_properties(test_blobstore_plain PROPERTIES LABELS unit
  ENVIRONMENT "NIMBUS_SOURCE_DIR=${PROJECT_SOURCE_DIR};NIMBUS_TEST_PLAIN_IO=1")
