# The semantic-version order of agent packages (common/src/semver.c).
nimbus_unit_test(test_semver SOURCES ${CMAKE_CURRENT_LIST_DIR}/test_semver.c
                 LIBS nimbus_common)
