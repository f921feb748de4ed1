# How Nimbus links Paho MQTT C: the target nimbus_paho, which every
# program and library that talks MQTT links, and NIMBUS_PAHO_OBJECTS, the
# sources (common/src) built with it.
#
# NIMBUS_PAHO_PATCHED (AUTO, ON or OFF) picks one of two builds:
#
#  - patched: a copy of Paho's static archive with some of its internal
#    calls renamed to ours (objcopy) and a few wrapped (-Wl,--wrap): a
#    socket read-ahead (common/src/paho_read.c), publishes written on the
#    publishing thread (paho_send.c), no debugging bookkeeping and no
#    100 ms naps (paho_lean.c), TCP_NODELAY before connect (nodelay.c).
#    Each rests on what Paho's code does inside, which its public header
#    does not promise, so it is only built for the one Paho it was read
#    against: the configure check below finds that version in the archive
#    itself and every symbol the patches rename, wrap or read, and finds
#    no select() (a Paho built with PAHO_USE_SELECT would strand bytes in
#    the read-ahead) and no OpenSSL (its TLS variant reads through
#    SSL_read, past the read-ahead). docs/architecture.md, "Paho, patched
#    and not", says what breaks each patch.
#  - public: Paho's public API only, against its shared library (or its
#    static archive, NIMBUS_PAHO_LINK=static), any 1.3.x from 1.3.9.
#    TCP_NODELAY is set on Paho's socket once it is connected
#    (common/src/paho_public.c, nb_paho_connected); a worker's backpressure
#    works the same way in both builds (its arrival callback returns 0).
#
# AUTO is patched when the check passes and public otherwise; ON fails the
# configure when the check does not pass; OFF is public. The choice is in
# NIMBUS_PAHO_BUILD ("patched" or "public") and in the compile definition
# NB_PAHO_PATCHED (1 or 0) of everything that links nimbus_paho.

set(NIMBUS_PAHO_PATCHED AUTO CACHE STRING
    "Link a patched copy of Paho's static archive: AUTO (when the configure check passes), ON (required) or OFF (Paho's public API only)")
set_property(CACHE NIMBUS_PAHO_PATCHED PROPERTY STRINGS AUTO ON OFF)
set(NIMBUS_PAHO_LINK shared CACHE STRING
    "The public-API build links Paho's shared library (shared) or its static archive (static)")
set_property(CACHE NIMBUS_PAHO_LINK PROPERTY STRINGS shared static)

find_package(eclipse-paho-mqtt-c REQUIRED)
# Paho's shared library (the imported target's file for whatever build
# type it was installed with) and the directory its static archive would
# be in. A Paho installed with static libraries only has no shared target.
if(TARGET eclipse-paho-mqtt-c::paho-mqtt3a)
  set(_paho_target eclipse-paho-mqtt-c::paho-mqtt3a)
elseif(TARGET eclipse-paho-mqtt-c::paho-mqtt3a-static)
  set(_paho_target eclipse-paho-mqtt-c::paho-mqtt3a-static)
else()
  message(FATAL_ERROR "eclipse-paho-mqtt-c has no paho-mqtt3a target")
endif()
get_target_property(_paho_shared ${_paho_target} LOCATION)
get_filename_component(_paho_dir "${_paho_shared}" DIRECTORY)
# Beside the Paho found, never another one's (its headers are these).
find_library(PAHO_ASYNC_STATIC NAMES libpaho-mqtt3a.a PATHS "${_paho_dir}"
             NO_DEFAULT_PATH)
if(CMAKE_OBJCOPY)
  set(NB_OBJCOPY "${CMAKE_OBJCOPY}")
else()
  find_program(NB_OBJCOPY NAMES objcopy llvm-objcopy)
endif()
# nb_paho_check_patchable, nb_paho_file_version (and NB_NM).
include(${CMAKE_CURRENT_LIST_DIR}/NimbusPahoCheck.cmake)

string(TOUPPER "${NIMBUS_PAHO_PATCHED}" _nb_want)
if(_nb_want STREQUAL "OFF")
  set(_nb_build public)
  set(_nb_paho_why "NIMBUS_PAHO_PATCHED=OFF")
else()
  if(PAHO_ASYNC_STATIC)
    nb_paho_check_patchable("${PAHO_ASYNC_STATIC}" _nb_paho_ok _nb_paho_why)
  else()
    set(_nb_paho_ok FALSE)
    set(_nb_paho_why "no static libpaho-mqtt3a.a beside ${_paho_shared}")
  endif()
  if(_nb_paho_ok)
    set(_nb_build patched)
  elseif(_nb_want STREQUAL "ON")
    message(FATAL_ERROR "NIMBUS_PAHO_PATCHED=ON, but ${_nb_paho_why}. "
            "Configure with -DNIMBUS_PAHO_PATCHED=OFF (or AUTO) for the "
            "build on Paho's public API.")
  else()
    set(_nb_build public)
  endif()
endif()
# In the cache too, for the tests (test_paho_check) and for a person.
set(NIMBUS_PAHO_BUILD ${_nb_build} CACHE INTERNAL
    "The Paho build chosen: patched or public")

add_library(nimbus_paho INTERFACE)
# Paho's headers, for nimbus_paho's users and for the sources built with
# it (common/CMakeLists.txt): those of the Paho found, not /usr/include's.
get_target_property(NB_PAHO_INCLUDE_DIRS ${_paho_target}
                    INTERFACE_INCLUDE_DIRECTORIES)
if(NOT NB_PAHO_INCLUDE_DIRS)
  set(NB_PAHO_INCLUDE_DIRS "")
endif()
target_include_directories(nimbus_paho INTERFACE ${NB_PAHO_INCLUDE_DIRS})

if(NIMBUS_PAHO_BUILD STREQUAL "patched")
  message(STATUS "Paho: patched copy of ${PAHO_ASYNC_STATIC} (${NB_PAHO_PATCHED_VERSION})")
  # A copy of the archive in which Paho's own recv, poll, writev and close
  # calls are renamed to common/src/paho_read.c (a read-ahead: one recv
  # per burst of packets instead of one per header byte plus one for the
  # body, and the write check before each packet answered without a
  # system call), and its pthread_cond_signal and pthread_mutex_unlock
  # calls to common/src/paho_send.c, which with MQTTAsync_processCommand
  # made global writes a publish on the publishing thread instead of
  # waking Paho's send thread (nb_paho_send). Remade whenever the system's
  # archive or this file changes.
  set(PAHO_NIMBUS_STATIC "${CMAKE_BINARY_DIR}/paho/libpaho-mqtt3a-nimbus.a")
  file(MAKE_DIRECTORY "${CMAKE_BINARY_DIR}/paho")
  add_custom_command(OUTPUT "${PAHO_NIMBUS_STATIC}"
    COMMAND "${NB_OBJCOPY}" --redefine-sym recv=nb_paho_recv
            --redefine-sym poll=nb_paho_poll --redefine-sym close=nb_paho_close
            --redefine-sym writev=nb_paho_writev
            --redefine-sym pthread_cond_signal=nb_paho_cond_signal
            --redefine-sym pthread_mutex_unlock=nb_paho_mutex_unlock
            --globalize-symbol MQTTAsync_processCommand
            "${PAHO_ASYNC_STATIC}" "${PAHO_NIMBUS_STATIC}"
    DEPENDS "${PAHO_ASYNC_STATIC}" "${CMAKE_CURRENT_LIST_FILE}"
    COMMENT "Paho's archive with its socket calls redirected")
  add_custom_target(nimbus_paho_archive DEPENDS "${PAHO_NIMBUS_STATIC}")
  add_dependencies(nimbus_paho nimbus_paho_archive)
  # The Paho archive the static agent library takes in (static.cmake).
  set(NB_PAHO_ARCHIVE "${PAHO_NIMBUS_STATIC}")
  target_link_libraries(nimbus_paho INTERFACE "${PAHO_NIMBUS_STATIC}"
                        Threads::Threads ${CMAKE_DL_LIBS} anl)
  # Paho never sets TCP_NODELAY (FINDINGS.md): its connect() calls land in
  # nodelay.c's __wrap_connect, which keeps the change private to our
  # binaries and to libnimbus-agent. Debian's Paho is built with its
  # debugging bookkeeping on (two global mutexes taken by every function
  # and allocation of the library); paho_lean.c replaces it the way
  # PAHO_HIGH_PERFORMANCE does, and ends two 100 ms naps early (usleep).
  target_link_options(nimbus_paho INTERFACE "-Wl,--wrap=connect"
    "-Wl,--wrap=StackTrace_entry" "-Wl,--wrap=StackTrace_exit"
    "-Wl,--wrap=mymalloc" "-Wl,--wrap=myrealloc" "-Wl,--wrap=myfree"
    "-Wl,--wrap=usleep")
  target_compile_definitions(nimbus_paho INTERFACE NB_PAHO_PATCHED=1)
  set(NIMBUS_PAHO_OBJECTS src/nodelay.c src/paho_lean.c src/paho_read.c
      src/paho_send.c)
else()
  # Any 1.3.x from 1.3.9: the first with everything nb_session uses
  # (MQTT 5 connect options, subscribe options lists, setConnected).
  if(NIMBUS_PAHO_LINK STREQUAL "static")
    if(NOT PAHO_ASYNC_STATIC)
      message(FATAL_ERROR "NIMBUS_PAHO_LINK=static, but no libpaho-mqtt3a.a beside ${_paho_shared}")
    endif()
    set(_nb_paho_lib "${PAHO_ASYNC_STATIC}")
    nb_paho_file_version("${PAHO_ASYNC_STATIC}" _nb_paho_v)
    set(NB_PAHO_ARCHIVE "${PAHO_ASYNC_STATIC}")
    target_link_libraries(nimbus_paho INTERFACE "${PAHO_ASYNC_STATIC}"
                          Threads::Threads ${CMAKE_DL_LIBS} anl)
  elseif(NIMBUS_PAHO_LINK STREQUAL "shared")
    if(NOT TARGET eclipse-paho-mqtt-c::paho-mqtt3a)
      message(FATAL_ERROR "NIMBUS_PAHO_LINK=shared, but this Paho has no shared paho-mqtt3a")
    endif()
    set(_nb_paho_lib "${_paho_shared}")
    nb_paho_file_version("${_paho_shared}" _nb_paho_v)
    set(NB_PAHO_ARCHIVE "")
    target_link_libraries(nimbus_paho INTERFACE eclipse-paho-mqtt-c::paho-mqtt3a
                          Threads::Threads)
  else()
    message(FATAL_ERROR "NIMBUS_PAHO_LINK must be shared or static, not '${NIMBUS_PAHO_LINK}'")
  endif()
  if(NOT _nb_paho_v)
    set(_nb_paho_v "${eclipse-paho-mqtt-c_VERSION}")
  endif()
  if(NOT _nb_paho_v MATCHES "^1\\.3\\.[0-9]+$" OR _nb_paho_v VERSION_LESS 1.3.9)
    message(FATAL_ERROR "Paho MQTT C '${_nb_paho_v}' (${_nb_paho_lib}): Nimbus needs 1.3.9 or a later 1.3.x")
  endif()
  message(STATUS "Paho: public API, ${NIMBUS_PAHO_LINK} ${_nb_paho_lib} (${_nb_paho_v}); not patched: ${_nb_paho_why}")
  target_compile_definitions(nimbus_paho INTERFACE NB_PAHO_PATCHED=0)
  set(NIMBUS_PAHO_OBJECTS src/paho_public.c)
endif()
