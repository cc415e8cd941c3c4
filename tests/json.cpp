// Boost.JSON's implementation, compiled once for the tests that read JSON (test_report, and
// test_trace in the tests_event_loop group).
#include <boost/json/src.hpp>
