#include "sdk/cpp/cli/exit_codes.h"

namespace fjord::cli {

int ExitCodeFor(const absl::Status& status) {
  switch (status.code()) {
    case absl::StatusCode::kOk:
      return kExitOk;
    case absl::StatusCode::kInvalidArgument:
      return kExitInvalidArgument;
    case absl::StatusCode::kNotFound:
      return kExitNotFound;
    case absl::StatusCode::kAlreadyExists:
      return kExitAlreadyExists;
    case absl::StatusCode::kPermissionDenied:
      return kExitPermissionDenied;
    case absl::StatusCode::kUnauthenticated:
      return kExitUnauthenticated;
    case absl::StatusCode::kResourceExhausted:
      return kExitResourceExhausted;
    case absl::StatusCode::kFailedPrecondition:
      return kExitFailedPrecondition;
    case absl::StatusCode::kUnimplemented:
      return kExitUnimplemented;
    case absl::StatusCode::kUnavailable:
      return kExitUnavailable;
    case absl::StatusCode::kDeadlineExceeded:
      return kExitDeadlineExceeded;
    default:
      return kExitInternal;
  }
}

const char* ExitCodeHelp() {
  return "Exit codes:\n"
         "   0  ok\n"
         "   1  usage: bad command line\n"
         "   2  the followed job ended failed or cancelled\n"
         "   3  INVALID_ARGUMENT     a request or job.yaml field is invalid\n"
         "   4  NOT_FOUND            unknown job, file or adapter; missing local file\n"
         "   5  ALREADY_EXISTS       idempotency key reused with another job; key file exists\n"
         "   6  PERMISSION_DENIED    not allowed; secret key file readable by others\n"
         "   7  UNAUTHENTICATED      the daemon refused this client's key\n"
         "   8  RESOURCE_EXHAUSTED   a limit: queue full, upload too big, storage quota\n"
         "   9  FAILED_PRECONDITION  the job's status does not allow this; a file a job uses\n"
         "  10  UNIMPLEMENTED        the daemon does not know the command\n"
         "  11  UNAVAILABLE          the daemon is unreachable or shutting down\n"
         "  12  DEADLINE_EXCEEDED    connected, but no reply in time\n"
         "  13  INTERNAL             a bug, a malformed reply, a corrupt download\n";
}

}  // namespace fjord::cli
