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
#ifndef FJORD_RUNTIME_TRAIN_CHECKPOINT_H_
#define FJORD_RUNTIME_TRAIN_CHECKPOINT_H_

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace fjord::train {

// Writes checkpoint `step` under `root`: calls `write_files(tmp_dir)` to fill a
// fresh temporary directory, then manifests, syncs and renames it to
// <root>/step-NNNNNNNN (replacing an existing one of the same step), then
// deletes the oldest step-* directories beyond `keep_last` (0 keeps all).
// Returns the final path. On any error the temporary directory is removed and
// existing checkpoints are untouched. `root` is created if missing, its parent
// never (Unavailable when it is gone: a deleted job directory or an
// unmounted storage root is not rebuilt underneath). Temporaries that a
// killed writer left in `root` (.tmp-step-*, step-*.old-*) are removed first:
// one writer per root. Errors: ResourceExhausted for a full disk,
// PermissionDenied for a read-only or unwritable one, Unavailable for a
// vanished path, Internal otherwise; `write_files`' own errors as they are.
absl::StatusOr<std::string> WriteCheckpoint(
    const std::string& root, int64_t step, int64_t keep_last,
    const std::function<absl::Status(const std::string& tmp_dir)>& write_files);

// Checks `dir` against its MANIFEST.json: DataLoss naming the file that is
// missing, has the wrong size or checksum, or is not listed.
absl::Status VerifyCheckpoint(const std::string& dir);

struct FoundCheckpoint {
  std::string dir;
  int64_t step = 0;
};

// The newest checkpoint under `root` that verifies. Each newer one that does
// not is reported in `skipped` ("<dir>: <reason>"). NotFound when none.
absl::StatusOr<FoundCheckpoint> FindLatestCheckpoint(const std::string& root,
                                                     std::vector<std::string>* skipped);

// Step-* directories under root, oldest first (verified or not).
std::vector<FoundCheckpoint> ListCheckpoints(const std::string& root);

}  // namespace fjord::train

#endif  // FJORD_RUNTIME_TRAIN_CHECKPOINT_H_
