// The `fjord` CLI's exit codes: what scripts can rely on. Each error code of
// the protocol (docs/protocol.md §4) has its own exit code, whether the daemon
// returned it or the CLI found the problem itself (a job.yaml field out of
// range is INVALID_ARGUMENT either way).
#ifndef FJORD_SDK_CPP_CLI_EXIT_CODES_H_
#define FJORD_SDK_CPP_CLI_EXIT_CODES_H_

#include "absl/status/status.h"

namespace fjord::cli {

enum ExitCode : int {
  kExitOk = 0,
  kExitUsage = 1,            // bad command line: unknown command/option, missing argument
  kExitJobNotSucceeded = 2,  // a followed job ended failed or cancelled
  kExitInvalidArgument = 3,  // INVALID_ARGUMENT: a field of the request (or job.yaml) is invalid
  kExitNotFound = 4,         // NOT_FOUND: unknown job/file/adapter (or a local file is missing)
  kExitAlreadyExists =
      5,  // ALREADY_EXISTS: idempotency key reused with another body; key file exists
  kExitPermissionDenied = 6,  // PERMISSION_DENIED (also a secret key file others can read)
  kExitUnauthenticated =
      7,  // UNAUTHENTICATED: the daemon refused this client's key, or the handshake failed
  kExitResourceExhausted =
      8,  // RESOURCE_EXHAUSTED: a limit (queue full, upload too big, storage quota)
  kExitFailedPrecondition =
      9,  // FAILED_PRECONDITION: the job's status does not allow this; a file a job uses
  kExitUnimplemented = 10,  // UNIMPLEMENTED: the daemon does not know the command
  kExitUnavailable =
      11,  // UNAVAILABLE: daemon unreachable (not running, wrong endpoint) or shutting down
  kExitDeadlineExceeded = 12,  // DEADLINE_EXCEEDED: connected, but no reply within the timeout
  kExitInternal = 13,          // INTERNAL, DATA_LOSS and anything else
};

// The exit code for an error status (kExitOk for OK).
int ExitCodeFor(const absl::Status& status);

// The table above as text, for `fjord --help`.
const char* ExitCodeHelp();

}  // namespace fjord::cli

#endif  // FJORD_SDK_CPP_CLI_EXIT_CODES_H_
