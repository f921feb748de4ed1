# Unit tests of the storage module's blob store on a temporary directory
# (no Redis, no network).
nimbus_unit_test(test_blobstore
                 SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/test_blobstore.c
                 LIBS nimbus_storage nimbus_common)
