#pragma once
// A fresh directory for one test, removed afterwards.

#include <cstdlib>
#include <filesystem>
#include <string>

namespace regpin::testing {

class temp_dir {
public:
    temp_dir() {
        auto base = std::filesystem::temp_directory_path() / "regpin-test-XXXXXX";
        std::string tmpl = base.string();
        char* made = ::mkdtemp(tmpl.data());
        if (made == nullptr) throw std::runtime_error("mkdtemp failed");
        path_ = made;
    }
    ~temp_dir() {
        std::error_code ec;
        std::filesystem::remove_all(path_, ec);
    }
    temp_dir(const temp_dir&) = delete;
    temp_dir& operator=(const temp_dir&) = delete;

    const std::filesystem::path& path() const { return path_; }
    std::string str() const { return path_.string(); }

private:
    std::filesystem::path path_;
};

}  // namespace regpin::testing
