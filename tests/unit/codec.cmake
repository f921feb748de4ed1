# Unit tests of the protocol module (schemas/): golden messages, malformed
# input, encoders, argument readers, canonical form.
nimbus_unit_test(test_codec SOURCES ${CMAKE_CURRENT_LIST_DIR}/test_codec.c
                 LIBS nimbus_schemas nimbus_common)
nimbus_unit_test(test_codec_args
                 SOURCES ${CMAKE_CURRENT_LIST_DIR}/test_codec_args.c
                 LIBS nimbus_schemas nimbus_common)
# So the golden files are found when the test runs outside ctest too.
target_compile_definitions(test_codec PRIVATE
                           NIMBUS_SOURCE_DIR_DEFAULT="${PROJECT_SOURCE_DIR}")

# Debian's cmocka 1.1.5 package config sets CMOCKA_LIBRARY and
# CMOCKA_INCLUDE_DIR but defines no cmocka::cmocka target, which
# nimbus_unit_test links. Imported link items resolve when the build is
# generated, so defining it here serves every fragment in this directory.
if(NOT TARGET cmocka::cmocka AND CMOCKA_LIBRARY)
  add_library(cmocka::cmocka UNKNOWN IMPORTED)
  set_target_properties(cmocka::cmocka PROPERTIES
    IMPORTED_LOCATION "${CMOCKA_LIBRARY}"
    INTERFACE_INCLUDE_DIRECTORIES "${CMOCKA_INCLUDE_DIR}")
endif()
