#pragma once

// A temporary directory for the examples that write files (CSV, images, databases): created
// fresh under $TMPDIR (or /tmp), removed with everything in it however main ends, an exception
// included. Not on a signal: an example killed by SIGINT or SIGKILL leaves it behind, as Python's
// tempfile.TemporaryDirectory does.

#include <stdlib.h> // mkdtemp (POSIX)

#include <cerrno>
#include <filesystem>
#include <string>
#include <system_error>

namespace triad_examples {

/** A fresh directory named `<prefix>-XXXXXX`, removed with its contents when this goes. */
class temp_dir {
public:
    explicit temp_dir(const std::string& prefix = "triad-example") {
        std::string pattern =
            (std::filesystem::temp_directory_path() / (prefix + "-XXXXXX")).string();
        if (::mkdtemp(pattern.data()) == nullptr)
            throw std::system_error(errno, std::generic_category(), "mkdtemp " + pattern);
        m_path = pattern;
    }
    temp_dir(const temp_dir&) = delete;
    temp_dir& operator=(const temp_dir&) = delete;
    ~temp_dir() {
        std::error_code ignored;
        std::filesystem::remove_all(m_path, ignored);
    }
    const std::filesystem::path& path() const noexcept { return m_path; }

private:
    std::filesystem::path m_path;
};

} // namespace triad_examples
