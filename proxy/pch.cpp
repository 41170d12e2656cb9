// The target that precompiles the heavy third-party headers once for every proxy library
// (proxy/CMakeLists.txt, REGPIN_PCH). Nothing of its own.
