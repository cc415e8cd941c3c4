// Boost.JSON's implementation, compiled once for the tests that read JSON (test_report,
// test_trace).
#include <boost/json/src.hpp>
