// ThreadSanitizer suppressions compiled into fjord's daemon-side binaries and
// tests (listed in their srcs, so the definition sits in the executable,
// which takes precedence over libtsan's weak default).
//
// Debian's libzmq is not built with -fsanitize=thread: TSan cannot see the
// lock-free pipes (ypipe) that hand message buffers between a socket's
// thread and ZeroMQ's I/O thread, and reports each hand-over as a race inside
// libzmq.so (or inside libsodium, which decrypts CURVE frames on the I/O
// thread). Races in fjord's own code are still reported.
extern "C" const char* __tsan_default_suppressions() {
  return "race:libzmq.so.5\nrace:libsodium.so.23\n";
}
