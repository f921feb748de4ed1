# Programs the integration tests drive (built into build/bin).
add_executable(nb-itest ${CMAKE_CURRENT_LIST_DIR}/nb_itest.c)
target_link_libraries(nb-itest PRIVATE nimbus-agent msgpackc)
add_executable(nb-blob ${CMAKE_CURRENT_LIST_DIR}/nb_blob.c)
target_link_libraries(nb-blob PRIVATE nimbus-agent)
