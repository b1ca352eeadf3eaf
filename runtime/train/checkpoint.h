// Training checkpoints on (possibly shared) storage.
//
// Layout: <root>/step-<NNNNNNNN>/ holding whatever files the trainer writes
// (the PEFT adapter under adapter/, training_state.safetensors,
// trainer_state.json, config.yaml) plus MANIFEST.json listing every file with
// its size and SHA-256. A checkpoint is written under a temporary name
// (<root>/.tmp-step-...), every file and directory fsynced, then renamed into
// place and the root fsynced, so a crash leaves either the old set of
// checkpoints or the new one, never a half-written step-* directory. A
// step-* directory whose manifest is missing or does not match its files
// (torn by a failing disk, edited by hand) is skipped on resume with a warning.
//
// Every file operation goes through an Env (runtime/util/env.h): `env` null
// means Env::Default(). Tests pass a MemEnv or a FaultInjectionEnv.
#ifndef FJORD_RUNTIME_TRAIN_CHECKPOINT_H_
#define FJORD_RUNTIME_TRAIN_CHECKPOINT_H_

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "runtime/util/env.h"

namespace fjord::train {

// Writes checkpoint `step` under `root`: calls `write_files(tmp_dir)` to fill a
// fresh temporary directory (through `env` too, if it is not the default:
// the checkpoint only sees what `env` shows), then reads back every file for
// the manifest, fsyncs every file and directory, renames the directory to
// <root>/step-NNNNNNNN (replacing an existing one of the same step) and
// fsyncs `root`, then deletes the oldest step-* directories beyond
// `keep_last` (0 keeps all; best effort). Returns the final path.
//
// On an error before the rename into place the temporary directory is
// removed (best effort: a leftover one is never taken for a checkpoint and
// the next write removes it) and existing checkpoints are untouched. If only
// the last step fails, the fsync of `root` after the rename, the new
// checkpoint is in place and whole (it verifies) but its rename may not be
// durable: the error is returned, nothing older is deleted, and after a
// crash either it or the previous newest one is found.
//
// `root` is created if missing, its parent never (Unavailable when it is
// gone: a deleted job directory or an unmounted storage root is not rebuilt
// underneath). Temporaries that a killed writer left in `root` (.tmp-step-*,
// step-*.old-*) are removed first: one writer per root. Errors name the
// operation and the path ("fsync directory /ckpt/.tmp-step-00000020-7: ...").
// Codes: ResourceExhausted for a full disk, PermissionDenied for a read-only
// or unwritable one, Unavailable for a vanished path, Internal for any other
// storage error; `write_files`' own errors as they are.
absl::StatusOr<std::string> WriteCheckpoint(
    const std::string& root, int64_t step, int64_t keep_last,
    const std::function<absl::Status(const std::string& tmp_dir)>& write_files, Env* env = nullptr);

// Checks `dir` against its MANIFEST.json: DataLoss naming the file that is
// missing, unreadable (with the read error), has the wrong size or checksum,
// or is not listed. A missing or unreadable manifest is DataLoss too.
absl::Status VerifyCheckpoint(const std::string& dir, Env* env = nullptr);

struct FoundCheckpoint {
  std::string dir;
  int64_t step = 0;
};

// The newest checkpoint under `root` that verifies. Each newer one that does
// not is reported in `skipped` (may be null; "<dir>: <reason>"). NotFound
// when none.
absl::StatusOr<FoundCheckpoint> FindLatestCheckpoint(const std::string& root,
                                                     std::vector<std::string>* skipped,
                                                     Env* env = nullptr);

// Step-* directories under root, oldest first (verified or not). Empty when
// root is missing or unreadable.
std::vector<FoundCheckpoint> ListCheckpoints(const std::string& root, Env* env = nullptr);

}  // namespace fjord::train

#endif  // FJORD_RUNTIME_TRAIN_CHECKPOINT_H_
