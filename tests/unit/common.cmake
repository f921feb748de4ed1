# Unit tests of common/: text checks shared by the worker and the agent.
nimbus_unit_test(test_text SOURCES ${CMAKE_CURRENT_LIST_DIR}/test_text.c
                 LIBS nimbus_common)
# The read-ahead under Paho's socket reads (common/src/paho_read.c).
nimbus_unit_test(test_paho_read
                 SOURCES ${CMAKE_CURRENT_LIST_DIR}/test_paho_read.c
                         ${PROJECT_SOURCE_DIR}/common/src/paho_read.c
                 LIBS nimbus_common)
# Random bytes from the per-thread pool (common/src/util.c).
nimbus_unit_test(test_random SOURCES ${CMAKE_CURRENT_LIST_DIR}/test_random.c
                 LIBS nimbus_common)
# Publishes written on the calling thread (common/src/paho_send.c), against
# a broker the test plays itself on a loopback socket.
nimbus_unit_test(test_paho_send
                 SOURCES ${CMAKE_CURRENT_LIST_DIR}/test_paho_send.c
                 LIBS nimbus_paho nimbus_common)
