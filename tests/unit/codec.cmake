# Unit tests of the protocol module (schemas/): golden messages, malformed
# input, encoders, argument readers, canonical form.
nimbus_unit_test(test_codec SOURCES ${CMAKE_CURRENT_LIST_DIR}/test_codec.c
                 LIBS nimbus_schemas nimbus_common)
nimbus_unit_test(test_codec_args
                 SOURCES ${CMAKE_CURRENT_LIST_DIR}/test_codec_args.c
                 LIBS nimbus_schemas nimbus_common)
# Every golden message checked against the tables of schemas/SPEC.md,
# read at run time.
nimbus_unit_test(test_golden_spec
                 SOURCES ${CMAKE_CURRENT_LIST_DIR}/test_golden_spec.c
                 LIBS nimbus_schemas nimbus_common)
# So the golden files (and SPEC.md) are found when the tests run outside
# ctest too.
foreach(t test_codec test_golden_spec)
  target_compile_definitions(${t} PRIVATE
                             NIMBUS_SOURCE_DIR_DEFAULT="${PROJECT_SOURCE_DIR}")
endforeach()

