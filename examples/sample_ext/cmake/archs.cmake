# Arch-list helpers of the sample extension, modelled on how vLLM guards kernels.
#
# A requested arch list (TORCH_CUDA_ARCH_LIST style: "9.0a;10.0f;12.1a;8.0+PTX")
# is intersected with each kernel family's allow-list; a family whose
# intersection is empty is not built, and CMake says so in one status line:
#   "Not building NVFP4 as no compatible archs found in TORCH_CUDA_ARCH_LIST=12.1a"
# That line is the only trace such a skip leaves: kernel-matrix finds it.

# sample_normalize_arch_list(OUT TEXT)
#   Turn "9.0a, 10.0f 12.1a" (';', ',' or spaces) into the CMake list
#   "9.0a;10.0f;12.1a", dropping duplicates.
function(sample_normalize_arch_list OUT TEXT)
  string(REGEX REPLACE "[ ,\t]+" ";" _list "${TEXT}")
  list(FILTER _list EXCLUDE REGEX "^$")
  list(REMOVE_DUPLICATES _list)
  set(${OUT} "${_list}" PARENT_SCOPE)
endfunction()

# _sample_split_arch(ARCH BASE SUFFIX PTX)
#   "12.1a+PTX" -> BASE=12.1, SUFFIX=a, PTX=TRUE
function(_sample_split_arch ARCH BASE SUFFIX PTX)
  if(NOT ARCH MATCHES "^([0-9]+\\.[0-9])([af]?)(\\+PTX)?$")
    message(FATAL_ERROR "malformed CUDA arch '${ARCH}' (write it like 9.0a, 10.0f, 8.0+PTX)")
  endif()
  set(${BASE} "${CMAKE_MATCH_1}" PARENT_SCOPE)
  set(${SUFFIX} "${CMAKE_MATCH_2}" PARENT_SCOPE)
  if(CMAKE_MATCH_3)
    set(${PTX} TRUE PARENT_SCOPE)
  else()
    set(${PTX} FALSE PARENT_SCOPE)
  endif()
endfunction()

# cuda_archs_loose_intersection(OUT ALLOWED REQUESTED)
#   For each REQUESTED arch, the arch to build it with, if the family's ALLOWED
#   list covers it:
#   * same arch and suffix                        -> the requested arch
#   * allowed x.yf, requested x.ya (cross-suffix)  -> x.ya (the requested suffix is kept)
#   * allowed x.ya/x.yf, requested plain x.y       -> the allowed x.ya/x.yf
#   * allowed plain x.y, requested x.ya/x.yf       -> the requested arch
#   * allowed x.yf, requested x.zf, z >= y         -> x.zf (family fallback)
#   * allowed plain x.y, requested plain x.z, z>=y -> the highest such x.y (SASS is
#     forward compatible within a major)
#   * allowed x.y+PTX, requested anything >= x.y   -> x.y+PTX
#   An allowed x.ya never serves a requested x.yf, nor x.ya another minor.
#
#   Examples:
#     ALLOWED="12.0f;12.1f" REQUESTED="12.1a"        -> "12.1a"
#     ALLOWED="12.0a;12.0f" REQUESTED="12.1a"        -> ""       (the vLLM 37725 bug)
#     ALLOWED="10.0f"       REQUESTED="10.3f;9.0a"   -> "10.3f"
#     ALLOWED="9.0a"        REQUESTED="9.0"          -> "9.0a"
#     ALLOWED="8.0;8.6"     REQUESTED="8.9"          -> "8.6"
#     ALLOWED="8.0+PTX"     REQUESTED="9.0"          -> "8.0+PTX"
function(cuda_archs_loose_intersection OUT ALLOWED REQUESTED)
  set(_result)
  foreach(_req IN LISTS REQUESTED)
    _sample_split_arch("${_req}" _rbase _rsuf _rptx)
    string(REGEX REPLACE "\\..*$" "" _rmajor "${_rbase}")
    set(_match)
    set(_loose)
    set(_via_ptx)
    foreach(_allow IN LISTS ALLOWED)
      _sample_split_arch("${_allow}" _abase _asuf _aptx)
      string(REGEX REPLACE "\\..*$" "" _amajor "${_abase}")
      if(_aptx AND _abase VERSION_LESS_EQUAL _rbase)
        set(_via_ptx "${_abase}+PTX")
      elseif(_abase VERSION_EQUAL _rbase)
        if(_asuf STREQUAL _rsuf OR (_asuf STREQUAL "f" AND _rsuf STREQUAL "a") OR _asuf STREQUAL "")
          set(_match "${_rbase}${_rsuf}")
        elseif(_rsuf STREQUAL "")
          set(_match "${_abase}${_asuf}")
        endif()
      elseif(_amajor STREQUAL _rmajor AND _abase VERSION_LESS _rbase)
        if(_asuf STREQUAL "f" AND _rsuf STREQUAL "f")
          set(_match "${_rbase}f")
        elseif(_asuf STREQUAL "" AND _rsuf STREQUAL "")
          set(_loose "${_abase}")  # ALLOWED is ascending: the last one is the highest
        endif()
      endif()
      if(_match)
        break()
      endif()
    endforeach()
    if(NOT _match AND _loose)
      set(_match "${_loose}")
    endif()
    if(NOT _match AND _via_ptx)
      set(_match "${_via_ptx}")
    endif()
    if(_match AND _rptx AND NOT _match MATCHES "\\+PTX$")
      set(_match "${_match}+PTX")
    endif()
    if(_match)
      list(APPEND _result "${_match}")
    endif()
  endforeach()
  list(REMOVE_DUPLICATES _result)
  set(${OUT} "${_result}" PARENT_SCOPE)
endfunction()

# sample_set_gencode_flags(SRCS <files...> ARCHS <archs...>)
#   Give each source its own -gencode flags (as vLLM does), instead of relying on
#   CMAKE_CUDA_ARCHITECTURES understanding a/f suffixes (only recent CMake does).
#   "9.0a" -> -gencode arch=compute_90a,code=sm_90a
#   "8.0+PTX" -> ... code=sm_80 and arch=compute_80,code=compute_80
function(sample_set_gencode_flags)
  cmake_parse_arguments(ARG "" "" "SRCS;ARCHS" ${ARGN})
  set(_flags)
  foreach(_arch IN LISTS ARG_ARCHS)
    _sample_split_arch("${_arch}" _base _suf _ptx)
    string(REPLACE "." "" _sm "${_base}")
    list(APPEND _flags "-gencode=arch=compute_${_sm}${_suf},code=sm_${_sm}${_suf}")
    if(_ptx)
      list(APPEND _flags "-gencode=arch=compute_${_sm}${_suf},code=compute_${_sm}${_suf}")
    endif()
  endforeach()
  set_property(SOURCE ${ARG_SRCS} APPEND PROPERTY COMPILE_OPTIONS ${_flags})
endfunction()

# sample_guarded_family(NAME <label> SRCS <files...> ALLOWED <archs...> OUT_SRCS <var>)
#   Intersect the requested archs with ALLOWED; on success give SRCS their flags
#   and append them to OUT_SRCS, otherwise print the vLLM-style skip line.
macro(sample_guarded_family)
  cmake_parse_arguments(_GF "" "NAME;OUT_SRCS" "SRCS;ALLOWED" ${ARGN})
  cuda_archs_loose_intersection(_GF_ARCHS "${_GF_ALLOWED}" "${SAMPLE_CUDA_ARCHS}")
  if(_GF_ARCHS)
    sample_set_gencode_flags(SRCS ${_GF_SRCS} ARCHS ${_GF_ARCHS})
    list(APPEND ${_GF_OUT_SRCS} ${_GF_SRCS})
    message(STATUS "Building ${_GF_NAME} for archs: ${_GF_ARCHS}")
  else()
    message(STATUS "Not building ${_GF_NAME} as no compatible archs found "
                   "in TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST} (allowed: ${_GF_ALLOWED})")
  endif()
endmacro()
