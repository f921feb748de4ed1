# Unit tests of libnimbus-agent and the nimbus-agent CLI's helpers, no
# network. The library exports only nimbus_*, so the test compiles the
# agent's sources itself to reach its internals (ag_*).
nimbus_unit_test(test_agent
  SOURCES ${CMAKE_CURRENT_LIST_DIR}/test_agent.c ${AGENT_LIB_SOURCES}
  LIBS nimbus_agent_cli nimbus_schemas nimbus_paho nimbus_common msgpackc
       Threads::Threads)
target_include_directories(test_agent PRIVATE
  ${PROJECT_SOURCE_DIR}/terminal-agent/src
  ${PROJECT_SOURCE_DIR}/terminal-agent/include)
