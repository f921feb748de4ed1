# Programs the integration tests drive (built into build/bin).
add_executable(nb-itest ${CMAKE_CURRENT_LIST_DIR}/nb_itest.c)
target_link_libraries(nb-itest PRIVATE nimbus-agent msgpackc)
add_executable(nb-blob ${CMAKE_CURRENT_LIST_DIR}/nb_blob.c)
target_link_libraries(nb-blob PRIVATE nimbus-agent)
# One take of due agent offers, straight through the storage model
# (test_agent_offer: only the first of two takes gets them).
add_executable(nb-agent-take ${CMAKE_CURRENT_LIST_DIR}/nb_agent_take.c)
target_link_libraries(nb-agent-take PRIVATE nimbus_storage)
