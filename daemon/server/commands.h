// The command table: each command name of docs/protocol.md §5 and its
// handler (handlers.h), and Dispatch, the one place a request is answered
// and counted.
#ifndef FJORD_DAEMON_SERVER_COMMANDS_H_
#define FJORD_DAEMON_SERVER_COMMANDS_H_

#include <map>
#include <string>

#include "daemon/server/handlers.h"

namespace fjord::daemon {

// Every command the daemon serves, by name.
const std::map<std::string, Handler>& CommandTable();

// Runs the handler of `command` (UNIMPLEMENTED, param command, for an
// unknown one) and sends the reply: an OK FINAL with its body, its chunk,
// nothing for a stream that opened, or the error. Counts
// fjord_requests_total{command, code} once; logs INTERNAL errors.
void Dispatch(DaemonContext& ctx, const Request& rq, const std::string& command);

}  // namespace fjord::daemon

#endif  // FJORD_DAEMON_SERVER_COMMANDS_H_
