# Unit tests of common/: text checks shared by the worker and the agent.
nimbus_unit_test(test_text SOURCES ${CMAKE_CURRENT_LIST_DIR}/test_text.c
                 LIBS nimbus_common)
# Random bytes from the per-thread pool (common/src/util.c).
nimbus_unit_test(test_random SOURCES ${CMAKE_CURRENT_LIST_DIR}/test_random.c
                 LIBS nimbus_common)
# The parts of the patched Paho build (cmake/NimbusPaho.cmake): the
# read-ahead under Paho's socket reads (common/src/paho_read.c), and
# publishes written on the calling thread (common/src/paho_send.c) against
# a broker the test plays itself on a loopback socket.
if(NIMBUS_PAHO_BUILD STREQUAL "patched")
  nimbus_unit_test(test_paho_read
                   SOURCES ${CMAKE_CURRENT_LIST_DIR}/test_paho_read.c
                           ${PROJECT_SOURCE_DIR}/common/src/paho_read.c
                   LIBS nimbus_common)
  nimbus_unit_test(test_paho_send
                   SOURCES ${CMAKE_CURRENT_LIST_DIR}/test_paho_send.c
                   LIBS nimbus_paho nimbus_common)
endif()
# Both builds: TCP_NODELAY on the session's socket, on the first connect
# and after a reconnect, and the session's connect and reconnect, against
# a broker the test plays itself.
nimbus_unit_test(test_paho_nodelay
                 SOURCES ${CMAKE_CURRENT_LIST_DIR}/test_paho_nodelay.c
                 LIBS nimbus_paho nimbus_common)
