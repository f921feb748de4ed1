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

# nimbus_offload and the op-string parser, against replies fed into the
# agent as test_agent feeds them (no network).
nimbus_unit_test(test_offload
  SOURCES ${CMAKE_CURRENT_LIST_DIR}/test_offload.c ${AGENT_LIB_SOURCES}
  LIBS nimbus_schemas nimbus_paho nimbus_common msgpackc OpenSSL::Crypto
       Threads::Threads m)
target_include_directories(test_offload PRIVATE
  ${PROJECT_SOURCE_DIR}/terminal-agent/src
  ${PROJECT_SOURCE_DIR}/terminal-agent/include)
