// fjordd's configuration (configs/fjordd.yaml documents every field). Parsed
// strictly: unknown keys and wrong types are errors naming the file, the line
// and the field. CheckConfig additionally checks the files the config names
// (keys, secret key permissions, models, the worker program): what
// `fjordd --check-config` runs.
#ifndef FJORD_DAEMON_SERVER_CONFIG_H_
#define FJORD_DAEMON_SERVER_CONFIG_H_

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "daemon/protocol/protocol.h"
#include "daemon/slurm/slurm.h"

namespace fjord::daemon {

struct DaemonConfig {
  std::string node_name;            // default: the host name
  std::string state_dir;            // required: SQLite store, worker sockets, lock
  std::string storage_root;         // required: shared storage (same path on every node)
  std::vector<std::string> listen;  // required: tcp://HOST:PORT, ipc:///PATH
  struct Security {
    bool curve = true;
    std::string server_secret_key_file;  // required with curve (mode 0600)
    std::string keys_file;               // required with curve
    bool allow_plaintext = false;        // curve: false needs this, and loopback/ipc endpoints only
    std::string plaintext_tenant = "dev";
    bool plaintext_admin = false;
  } security;
  std::map<std::string, std::string> models;  // name -> HF checkpoint directory
  struct Worker {
    std::string program;            // required: fjord-train
    std::vector<std::string> args;  // appended to every training run
    std::string user;               // when the daemon runs as root: one user for every tenant
    // worker.tenant_uid_range "FIRST-LAST": instead of `user`, each tenant's
    // workers run as a uid (and gid) of their own from this range, claimed on
    // the storage root (daemon/storage/tenant_ids.h). count 0: not set.
    uint32_t tenant_uid_first = 0;
    uint32_t tenant_uid_count = 0;
    std::map<std::string, std::string> env;
    bool validate = true;  // run `fjord-train validate` before queueing
    int64_t heartbeat_timeout_ms = 30000;
    int64_t stop_grace_ms = 60000;
    int64_t validation_timeout_ms = 600000;
    int max_restarts = 3;
    // prctl(PR_SET_NO_NEW_PRIVS) in every worker before exec: a compromised
    // worker cannot gain privileges through a setuid/setcap program. Off only
    // where CUDA needs the setuid nvidia-modprobe to create device files.
    bool no_new_privs = true;
  } worker;
  struct Scheduler {
    std::vector<int> gpus;  // device ids; empty: CPU node
    // Memory of each GPU in GB (10^9 bytes). Set on a GPU node, job.create
    // refuses a job whose frozen base cannot fit on one GPU
    // (server/base_memory.h). 0 (the default): unknown, no check.
    double gpu_memory_gb = 0;
    int cpu_slots = 1;
    int max_running_per_tenant = 4;
    int max_queued_per_tenant = 100;
    // Validators (`fjord-train validate`, which parses a job's data) running
    // at once on the node and per tenant; jobs beyond wait in `validating`.
    int max_validators = 4;
    int max_validators_per_tenant = 2;
  } scheduler;
  struct Limits {
    size_t max_message_bytes = protocol::kDefaultMaxMessageBytes;
    size_t max_body_bytes = protocol::kDefaultMaxBodyBytes;
    size_t upload_chunk_bytes = protocol::kDefaultUploadChunkBytes;
    uint64_t max_upload_bytes = protocol::kDefaultMaxUploadBytes;
    int max_peers = protocol::kDefaultMaxPeers;
    // Connections one client key may hold (a tenant cannot take every slot),
    // and the last slots, which only admins may take (at most max_peers - 1:
    // tenants always keep one).
    int max_peers_per_key = 128;
    int admin_reserved_peers = 16;
    int max_streams_per_peer = protocol::kDefaultMaxStreamsPerPeer;
    int64_t heartbeat_interval_ms = protocol::kDefaultHeartbeatIntervalMs;
    int64_t upload_idle_ms = 600000;
    int max_uploads_per_tenant = 16;        // in progress at once
    uint64_t max_tenant_storage_bytes = 0;  // a tenant's area on the storage root; 0: no quota
    uint64_t max_tenant_files = 100000;     // files and directories in a tenant's area; 0: no limit
  } limits;
  // Where trainers run: "local" (worker processes on this node, the
  // default) or "slurm" (Slurm batch jobs across the cluster: fjordd runs on
  // a host with the Slurm client commands, a login node; validators still
  // run here). docs/operations.md, "fjordd in front of a Slurm cluster".
  struct Executor {
    std::string kind = "local";
    SlurmConfig slurm;
  } executor;
  struct Metrics {
    std::string listen = "127.0.0.1:9464";  // "" disables the HTTP exporter
    std::string bearer_token_file;  // set: GET /metrics needs "Authorization: Bearer <its content>"
  } metrics;
  struct Logging {
    std::string level = "info";
    std::string file;  // "" = stderr
  } logging;
};

absl::StatusOr<DaemonConfig> ParseDaemonConfig(absl::string_view yaml, absl::string_view name);
absl::StatusOr<DaemonConfig> LoadDaemonConfig(const std::string& path);

// Checks what the config names on this machine: the secret key file
// (exists, mode 0600), the keys file, every model directory (config.json
// inside), the worker program (executable), the worker user, the state
// directory and storage root (directories). Returns every problem found, one
// per line, as one InvalidArgument/FailedPrecondition.
absl::Status CheckConfig(const DaemonConfig& config);

// worker.tenant_uid_range must be reserved for fjordd: no user or group of
// the node (getpwent/getgrent) may have an id in it. FailedPrecondition
// naming the first one that does. OK when the range is not set.
absl::Status CheckTenantUidRange(const DaemonConfig& config);

// True for a loopback tcp:// endpoint (127.0.0.0/8, [::1], localhost) or any ipc://.
bool IsLoopbackOrIpc(absl::string_view endpoint);

}  // namespace fjord::daemon

#endif  // FJORD_DAEMON_SERVER_CONFIG_H_
