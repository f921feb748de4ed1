# The configure check of the patched Paho build (cmake/NimbusPaho.cmake):
# whether a Paho static archive is the one the patches in common/src were
# read against. Also a script of its own, for the tests and for a person
# wondering why a build came out on the public API:
#
#   cmake -DARCHIVE=/usr/lib/x86_64-linux-gnu/libpaho-mqtt3a.a \
#         -P cmake/NimbusPahoCheck.cmake
#
# prints "patchable: <version>" (exit 0) or fails with "not patchable:
# <why>" (exit 1).

# The Paho the patches were read against: Debian's libpaho-mqtt 1.3.12-1,
# whose archive names itself 1.3.11 ("MQTTAsyncV3_Version 1.3.11").
set(NB_PAHO_PATCHED_VERSION "1.3.11")

# The archive's symbols the patches depend on. Undefined references the
# build renames (objcopy --redefine-sym) or wraps (-Wl,--wrap): one missing
# means the patch would not take, silently. Globals paho_lean.c and
# paho_send.c read (paho_internal.h), and the static MQTTAsync_processCommand
# objcopy makes global.
set(_nb_paho_refs recv poll close writev pthread_cond_signal
    pthread_mutex_unlock connect usleep StackTrace_entry StackTrace_exit
    mymalloc myrealloc myfree)
set(_nb_paho_data MQTTAsync_tostop sendThread_state receiveThread_state
    sendThread_id receiveThread_id mqttasync_mutex send_cond)
set(_nb_paho_funcs Thread_signal_cond)

if(CMAKE_NM)
  set(NB_NM "${CMAKE_NM}")
else()
  find_program(NB_NM NAMES nm llvm-nm)
endif()

# The Paho version a file names in its "MQTTAsyncV3_Version x.y.z" string
# (the archive or the shared library), into ${out}; "" when none.
function(nb_paho_file_version file out)
  set(_v "")
  if(EXISTS "${file}")
    file(STRINGS "${file}" _s REGEX "MQTTAsyncV3_Version [0-9]+\\.[0-9]+\\.[0-9]+"
         LIMIT_COUNT 1)
    if(_s MATCHES "MQTTAsyncV3_Version ([0-9]+\\.[0-9]+\\.[0-9]+)")
      set(_v "${CMAKE_MATCH_1}")
    endif()
  endif()
  set(${out} "${_v}" PARENT_SCOPE)
endfunction()

# Whether the static archive is the one the patches fit: ${ok} TRUE or
# FALSE, ${why} the first reason it is not.
function(nb_paho_check_patchable archive ok why)
  set(${ok} FALSE PARENT_SCOPE)
  if(NOT EXISTS "${archive}")
    set(${why} "no archive ${archive}" PARENT_SCOPE)
    return()
  endif()
  if(NOT NB_NM)
    set(${why} "nm not found" PARENT_SCOPE)
    return()
  endif()
  nb_paho_file_version("${archive}" _v)
  if(NOT _v STREQUAL NB_PAHO_PATCHED_VERSION)
    set(${why} "${archive} is Paho '${_v}', the patches fit ${NB_PAHO_PATCHED_VERSION} only"
        PARENT_SCOPE)
    return()
  endif()
  execute_process(COMMAND "${NB_NM}" "${archive}"
                  OUTPUT_VARIABLE _syms RESULT_VARIABLE _rc ERROR_QUIET)
  if(NOT _rc EQUAL 0)
    set(${why} "nm could not read ${archive}" PARENT_SCOPE)
    return()
  endif()
  # One "<value> <type> <name>" per line; undefined ones have no value.
  string(REGEX REPLACE "@[^\n]*" "" _syms "\n${_syms}\n")
  foreach(_s ${_nb_paho_refs})
    if(NOT _syms MATCHES "\n *U ${_s}\n")
      set(${why} "the archive never calls ${_s}: the patch on it would not take"
          PARENT_SCOPE)
      return()
    endif()
  endforeach()
  foreach(_s ${_nb_paho_data})
    if(NOT _syms MATCHES "\n[0-9a-f]+ [BDC] ${_s}\n")
      set(${why} "the archive has no global ${_s}" PARENT_SCOPE)
      return()
    endif()
  endforeach()
  foreach(_s ${_nb_paho_funcs})
    if(NOT _syms MATCHES "\n[0-9a-f]+ T ${_s}\n")
      set(${why} "the archive has no function ${_s}" PARENT_SCOPE)
      return()
    endif()
  endforeach()
  if(NOT _syms MATCHES "\n[0-9a-f]+ [tT] MQTTAsync_processCommand\n")
    set(${why} "the archive has no MQTTAsync_processCommand" PARENT_SCOPE)
    return()
  endif()
  if(_syms MATCHES "\n *U select\n")
    set(${why} "the archive waits with select() (PAHO_USE_SELECT): the read-ahead answers poll() only"
        PARENT_SCOPE)
    return()
  endif()
  if(_syms MATCHES "\n *U SSL_read\n")
    set(${why} "the archive is Paho's TLS variant: SSL_read would read past the read-ahead"
        PARENT_SCOPE)
    return()
  endif()
  set(${ok} TRUE PARENT_SCOPE)
  set(${why} "" PARENT_SCOPE)
endfunction()

if(CMAKE_SCRIPT_MODE_FILE STREQUAL CMAKE_CURRENT_LIST_FILE)
  if(NOT ARCHIVE)
    message(FATAL_ERROR "usage: cmake -DARCHIVE=<libpaho-mqtt3a.a> -P ${CMAKE_CURRENT_LIST_FILE}")
  endif()
  nb_paho_check_patchable("${ARCHIVE}" _ok _why)
  if(_ok)
    nb_paho_file_version("${ARCHIVE}" _v)
    message("patchable: ${_v}")
  else()
    message(FATAL_ERROR "not patchable: ${_why}")
  endif()
endif()
