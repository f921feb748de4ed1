# Unit tests of common/: text checks shared by the worker and the agent.
nimbus_unit_test(test_text SOURCES ${CMAKE_CURRENT_LIST_DIR}/test_text.c
                 LIBS nimbus_common)
