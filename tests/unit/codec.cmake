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

