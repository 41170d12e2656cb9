#include "proxy/cli/args.hpp"

#include <algorithm>
#include <cstdio>
#include <vector>

namespace regpin::proxy::cli {

std::optional<int> parse(CLI::App& app, int argc, char** argv) {
    // CLI11 reads a vector back to front.
    std::vector<std::string> words(argv, argv + argc);
    std::reverse(words.begin(), words.end());
    try {
        app.parse(words);
    } catch (const CLI::CallForHelp&) {
        std::fputs(app.help().c_str(), stdout);
        return 0;
    } catch (const CLI::CallForAllHelp&) {
        std::fputs(app.help("", CLI::AppFormatMode::All).c_str(), stdout);
        return 0;
    } catch (const CLI::ParseError& e) {
        // The subcommand that failed, when there is one: its --help is the one to read.
        const CLI::App* at = &app;
        for (const auto* sub = &app; sub != nullptr;) {
            auto subs = sub->get_subcommands();
            sub = subs.empty() ? nullptr : subs.front();
            if (sub != nullptr) at = sub;
        }
        return usage_error(*at, e.what());
    }
    return std::nullopt;
}

int usage_error(const CLI::App& app, const std::string& message) {
    std::string name = app.get_name();
    for (const auto* up = app.get_parent(); up != nullptr; up = up->get_parent())
        name = up->get_name() + " " + name;
    std::fprintf(stderr, "regpin: %s\n(see '%s --help')\n", message.c_str(), name.c_str());
    return 2;
}

}  // namespace regpin::proxy::cli
