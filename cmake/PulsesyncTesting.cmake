# pulsesync_add_test(NAME name LABELS unit|pg|e2e SOURCES ... LIBS ...)
# One GoogleTest binary registered with CTest under its label, so that
# `ctest -L unit` runs without a database. Tests labelled pg or e2e read
# PULSESYNC_TEST_DATABASE_URL (a superuser URL; scripts/test.sh sets it).
function(pulsesync_add_test)
  cmake_parse_arguments(T "" "NAME" "LABELS;SOURCES;LIBS" ${ARGN})
  add_executable(${T_NAME} ${T_SOURCES})
  target_link_libraries(${T_NAME} PRIVATE ${T_LIBS} GTest::gtest GTest::gmock GTest::gtest_main)
  add_test(NAME ${T_NAME} COMMAND ${T_NAME})
  set_tests_properties(${T_NAME} PROPERTIES LABELS "${T_LABELS}")
endfunction()
