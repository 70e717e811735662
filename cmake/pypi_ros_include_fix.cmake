# ROS 2 from PyPI wheels only (no system ROS): the wheels' exported CMake targets name
# the wheel builder's Python include folder (/opt/python/cpXY-cpXY/include/...), which
# does not exist here and makes configure fail. Replace such entries with this
# interpreter's include folders. On a robot computer with a system ROS no target names
# /opt/python/, so this loop changes nothing (see ../../../shared/PLATFORM.md).
get_directory_property(_efm_imported_targets IMPORTED_TARGETS)
set(_efm_needs_python_includes FALSE)
foreach(_target IN LISTS _efm_imported_targets)
  get_target_property(_includes ${_target} INTERFACE_INCLUDE_DIRECTORIES)
  if(_includes)
    set(_kept "")
    set(_dropped FALSE)
    foreach(_dir IN LISTS _includes)
      if(_dir MATCHES "^/opt/python/")
        set(_dropped TRUE)
      else()
        list(APPEND _kept "${_dir}")
      endif()
    endforeach()
    if(_dropped)
      if(NOT _efm_needs_python_includes)
        find_package(Python3 REQUIRED COMPONENTS Interpreter Development.Module NumPy)
        set(_efm_needs_python_includes TRUE)
      endif()
      list(APPEND _kept ${Python3_INCLUDE_DIRS} ${Python3_NumPy_INCLUDE_DIRS})
      set_target_properties(${_target} PROPERTIES INTERFACE_INCLUDE_DIRECTORIES "${_kept}")
    endif()
  endif()
endforeach()
