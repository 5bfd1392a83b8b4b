# lf_select_cuda_archs(<nvcc> <default> <out_var>): the CUDA architectures to build, as a list of
# numbers ("80;90").
#
# The request, first found: the environment's LORAFUSION_CUDA_ARCHS ("80;90", "8.0,9.0"), then
# torch's TORCH_CUDA_ARCH_LIST ("8.0;9.0+PTX", "8.0 9.0"), then <default> (-DLF_CUDA_ARCHS).
# Architectures that <nvcc> cannot compile (not in `nvcc --list-gpu-arch`, e.g. sm_50 for
# CUDA 13) are dropped with a warning and never requested; if none is left, configuring fails
# and names what nvcc supports. A malformed entry fails with the variable that holds it.
# Usable in script mode (cmake -P) too: tests/test_build.py runs it against a stand-in nvcc.
function(lf_select_cuda_archs nvcc default out_var)
  if(DEFINED ENV{LORAFUSION_CUDA_ARCHS} AND NOT "$ENV{LORAFUSION_CUDA_ARCHS}" STREQUAL "")
    set(req "$ENV{LORAFUSION_CUDA_ARCHS}")
    set(from "LORAFUSION_CUDA_ARCHS")
  elseif(DEFINED ENV{TORCH_CUDA_ARCH_LIST} AND NOT "$ENV{TORCH_CUDA_ARCH_LIST}" STREQUAL "")
    set(req "$ENV{TORCH_CUDA_ARCH_LIST}")
    set(from "TORCH_CUDA_ARCH_LIST")
  else()
    set(req "${default}")
    set(from "LF_CUDA_ARCHS")
  endif()
  string(REGEX REPLACE "[ ,;]+" ";" req "${req}")
  set(wanted)
  foreach(a IN LISTS req)
    if(a STREQUAL "")
      continue()
    endif()
    string(REGEX REPLACE "\\+PTX$" "" a "${a}")
    if(NOT a MATCHES "^([0-9]+)\\.?([0-9][a-z]?)$")
      message(FATAL_ERROR "lorafusion_ext: ${from} holds '${a}'; expected compute capabilities such "
                          "as 8.0 or 80, separated by ';', ',' or spaces")
    endif()
    list(APPEND wanted "${CMAKE_MATCH_1}${CMAKE_MATCH_2}")
  endforeach()
  list(REMOVE_DUPLICATES wanted)
  if(NOT wanted)
    message(FATAL_ERROR "lorafusion_ext: ${from} names no CUDA architecture")
  endif()
  execute_process(COMMAND "${nvcc}" --list-gpu-arch OUTPUT_VARIABLE supported RESULT_VARIABLE rc
                  OUTPUT_STRIP_TRAILING_WHITESPACE)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "lorafusion_ext: `${nvcc} --list-gpu-arch` failed; nvcc 11.0 or newer is needed")
  endif()
  string(REPLACE "compute_" "" supported "${supported}")
  string(REGEX REPLACE "[\n\r ]+" ";" supported "${supported}")
  set(built)
  set(dropped)
  foreach(a IN LISTS wanted)
    if(a IN_LIST supported)
      list(APPEND built ${a})
    else()
      list(APPEND dropped ${a})
    endif()
  endforeach()
  if(dropped)
    message(WARNING "lorafusion_ext: ${from} asks for sm ${dropped}, which ${nvcc} cannot compile "
                    "(it supports ${supported}); not built")
  endif()
  if(NOT built)
    message(FATAL_ERROR "lorafusion_ext: none of the CUDA architectures ${wanted} (from ${from}) can be "
                        "compiled by ${nvcc}, which supports ${supported}")
  endif()
  message(STATUS "lorafusion_ext: CUDA architectures ${built} (from ${from})")
  set(${out_var} ${built} PARENT_SCOPE)
endfunction()
