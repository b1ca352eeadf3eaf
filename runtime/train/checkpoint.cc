#include "runtime/train/checkpoint.h"

#include <unistd.h>

#include <algorithm>
#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "runtime/util/sha256.h"
#include "runtime/util/status_macros.h"

namespace fjord::train {
namespace {

constexpr char kManifest[] = "MANIFEST.json";
// Far deeper than any checkpoint (adapter/ is one level down): bounds the
// walk, so a directory linked into itself cannot recurse forever.
constexpr int kMaxDepth = 16;

// An Env error as WriteCheckpoint reports it: the message as it is (it names
// the operation and the path), the code one of ResourceExhausted (full disk),
// PermissionDenied (read-only or unwritable), NotFound (a vanished path, made
// Unavailable by WriteCheckpoint) or Internal for anything else.
absl::Status StorageError(const absl::Status& s) {
  switch (s.code()) {
    case absl::StatusCode::kOk:
    case absl::StatusCode::kResourceExhausted:
    case absl::StatusCode::kPermissionDenied:
    case absl::StatusCode::kNotFound:
    case absl::StatusCode::kInternal:
      return s;
    default:
      return absl::InternalError(s.message());
  }
}

struct FileDigest {
  uint64_t size = 0;
  std::string sha256;
};

// Size and SHA-256 of a file, read with read(2) through the Env: an I/O
// error of a failing disk is a Status, never a SIGBUS as with a mapping.
absl::StatusOr<FileDigest> Digest(Env* env, const std::string& path) {
  FJORD_ASSIGN_OR_RETURN(std::unique_ptr<SequentialFile> file, env->NewSequentialFile(path));
  Sha256 hash;
  FileDigest d;
  std::string buf(1 << 20, '\0');
  while (true) {
    FJORD_ASSIGN_OR_RETURN(size_t n, file->Read(buf.data(), buf.size()));
    if (n == 0) break;
    hash.Update(absl::string_view(buf.data(), n));
    d.size += n;
  }
  d.sha256 = hash.FinalHex();
  return d;
}

// Adds the files below dir/rel to `files` (paths relative to dir) and the
// directories (dir/rel itself first, full paths) to `dirs`.
absl::Status ListTree(Env* env, const std::string& dir, const std::string& rel, int depth,
                      std::vector<std::string>* files, std::vector<std::string>* dirs) {
  const std::string path = rel.empty() ? dir : JoinPath(dir, rel);
  FJORD_ASSIGN_OR_RETURN(std::vector<std::string> names, env->ListDir(path));
  dirs->push_back(path);
  for (const std::string& name : names) {
    const std::string child = rel.empty() ? name : absl::StrCat(rel, "/", name);
    if (!env->IsDirectory(JoinPath(dir, child))) {
      files->push_back(child);
    } else if (depth >= kMaxDepth) {
      return absl::FailedPreconditionError(
          absl::StrCat("listing ", path, ": directories nested too deeply"));
    } else {
      FJORD_RETURN_IF_ERROR(ListTree(env, dir, child, depth + 1, files, dirs));
    }
  }
  return absl::OkStatus();
}

// Relative paths of the files under dir, sorted.
absl::StatusOr<std::vector<std::string>> ListFiles(Env* env, const std::string& dir) {
  std::vector<std::string> files, dirs;
  FJORD_RETURN_IF_ERROR(ListTree(env, dir, "", 0, &files, &dirs));
  std::sort(files.begin(), files.end());
  return files;
}

// Creates path with `data`, fsynced (no rename: it is inside a temporary
// directory that is renamed as a whole).
absl::Status WriteSynced(Env* env, const std::string& path, absl::string_view data) {
  FJORD_ASSIGN_OR_RETURN(std::unique_ptr<WritableFile> file, env->NewWritableFile(path));
  absl::Status status = file->Append(data);
  if (status.ok()) status = file->Sync();
  const absl::Status closed = file->Close();  // even after an error
  return status.ok() ? closed : status;
}

// "a/b/step-00000002/" -> "step-00000002".
std::string LastComponent(absl::string_view path) {
  while (path.size() > 1 && path.back() == '/') path.remove_suffix(1);
  const size_t slash = path.rfind('/');
  return std::string(slash == absl::string_view::npos ? path : path.substr(slash + 1));
}

bool ParseStepName(const std::string& name, int64_t* step) {
  if (name.rfind("step-", 0) != 0 || name.size() <= 5) return false;
  int64_t v = 0;
  for (size_t i = 5; i < name.size(); ++i) {
    if (name[i] < '0' || name[i] > '9') return false;
    v = v * 10 + (name[i] - '0');
    if (v > (int64_t{1} << 50)) return false;
  }
  *step = v;
  return true;
}

// Writers killed mid-checkpoint (kill -9, OOM, a node crash) leave
// .tmp-step-* and step-*.old-* directories behind, named with their pid.
// There is one writer per root (a job has one trainer), so the next writer
// removes them. Best effort.
void RemoveStaleTemporaries(Env* env, const std::string& root) {
  absl::StatusOr<std::vector<std::string>> names = env->ListDir(root);
  if (!names.ok()) return;
  for (const std::string& name : *names) {
    if (name.rfind(".tmp-step-", 0) == 0 ||
        (name.rfind("step-", 0) == 0 && name.find(".old-") != std::string::npos)) {
      env->DeleteRecursively(JoinPath(root, name)).IgnoreError();
    }
  }
}

}  // namespace

std::vector<FoundCheckpoint> ListCheckpoints(const std::string& root, Env* env) {
  if (env == nullptr) env = Env::Default();
  std::vector<FoundCheckpoint> out;
  absl::StatusOr<std::vector<std::string>> names = env->ListDir(root);
  if (!names.ok()) return out;
  for (const std::string& name : *names) {
    int64_t step = 0;
    const std::string dir = JoinPath(root, name);
    if (ParseStepName(name, &step) && env->IsDirectory(dir)) out.push_back({dir, step});
  }
  std::sort(out.begin(), out.end(), [](const auto& a, const auto& b) { return a.step < b.step; });
  return out;
}

absl::Status VerifyCheckpoint(const std::string& dir, Env* env) {
  if (env == nullptr) env = Env::Default();
  const std::string manifest_path = JoinPath(dir, kManifest);
  absl::StatusOr<std::string> text = env->ReadFileToString(manifest_path);
  if (!text.ok()) {
    if (text.status().code() == absl::StatusCode::kNotFound) {
      return absl::DataLossError(absl::StrCat(manifest_path, ": missing (torn checkpoint?)"));
    }
    return absl::DataLossError(
        absl::StrCat(manifest_path, ": unreadable: ", text.status().message()));
  }
  const nlohmann::json manifest = nlohmann::json::parse(*text, nullptr, /*allow_exceptions=*/false);
  if (!manifest.is_object() || !manifest.contains("files") || !manifest["files"].is_object()) {
    return absl::DataLossError(absl::StrCat(manifest_path, ": not a valid manifest"));
  }
  // The header is checked too: a manifest that parses but says another
  // format, version or step (a flipped byte in a string stays valid JSON)
  // is not this checkpoint's.
  if (!manifest.contains("format") || manifest["format"] != "fjord.checkpoint") {
    return absl::DataLossError(
        absl::StrCat(manifest_path, ": field \"format\" is not \"fjord.checkpoint\""));
  }
  if (!manifest.contains("version") || manifest["version"] != 1) {
    return absl::DataLossError(
        absl::StrCat(manifest_path,
                     ": field \"version\" is not 1 (the only manifest version this fjord reads)"));
  }
  if (!manifest.contains("step") || !manifest["step"].is_number_integer()) {
    return absl::DataLossError(absl::StrCat(manifest_path, ": field \"step\" is not an integer"));
  }
  if (int64_t named = 0;
      ParseStepName(LastComponent(dir), &named) && manifest["step"].get<int64_t>() != named) {
    return absl::DataLossError(absl::StrCat(manifest_path, ": field \"step\" is ",
                                            manifest["step"].get<int64_t>(),
                                            " but the directory is step ", named));
  }
  const auto& files = manifest["files"];
  FJORD_ASSIGN_OR_RETURN(std::vector<std::string> present, ListFiles(env, dir));
  for (const std::string& rel : present) {
    if (rel != kManifest && !files.contains(rel)) {
      return absl::DataLossError(absl::StrCat(dir, ": file ", rel, " is not in the manifest"));
    }
  }
  for (auto it = files.begin(); it != files.end(); ++it) {
    const std::string path = JoinPath(dir, it.key());
    const auto& entry = it.value();
    if (!entry.is_object() || !entry.contains("sha256") || !entry.contains("size") ||
        !entry["sha256"].is_string() || !entry["size"].is_number_unsigned()) {
      return absl::DataLossError(absl::StrCat(manifest_path, ": bad entry for ", it.key()));
    }
    absl::StatusOr<FileDigest> d = Digest(env, path);
    if (!d.ok())
      return absl::DataLossError(
          absl::StrCat(path, ": listed in the manifest but unreadable: ", d.status().message()));
    if (d->size != entry["size"].get<uint64_t>()) {
      return absl::DataLossError(absl::StrCat(
          path, ": size ", d->size, " != ", entry["size"].get<uint64_t>(), " in the manifest"));
    }
    if (d->sha256 != entry["sha256"].get<std::string>()) {
      return absl::DataLossError(absl::StrCat(path, ": SHA-256 does not match the manifest"));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<FoundCheckpoint> FindLatestCheckpoint(const std::string& root,
                                                     std::vector<std::string>* skipped, Env* env) {
  if (env == nullptr) env = Env::Default();
  std::vector<FoundCheckpoint> all = ListCheckpoints(root, env);
  for (auto it = all.rbegin(); it != all.rend(); ++it) {
    const absl::Status s = VerifyCheckpoint(it->dir, env);
    if (s.ok()) return *it;
    if (skipped != nullptr) skipped->push_back(absl::StrCat(it->dir, ": ", s.message()));
  }
  return absl::NotFoundError(absl::StrCat("no valid checkpoint under ", root));
}

namespace {

absl::StatusOr<std::string> WriteCheckpointImpl(
    const std::string& root, int64_t step, int64_t keep_last,
    const std::function<absl::Status(const std::string& tmp_dir)>& write_files, Env* env) {
  // Only `root` itself is created: a missing parent (the job's directory, an
  // unmounted or deleted storage root) is an error, never silently rebuilt
  // on whatever disk is underneath.
  if (absl::Status made = env->CreateDir(root);
      !made.ok() && !(made.code() == absl::StatusCode::kAlreadyExists && env->IsDirectory(root))) {
    return StorageError(made);
  }
  RemoveStaleTemporaries(env, root);
  const std::string name = absl::StrFormat("step-%08d", step);
  const std::string final_dir = JoinPath(root, name);
  const std::string tmp = JoinPath(root, absl::StrCat(".tmp-", name, "-", ::getpid()));
  env->DeleteRecursively(tmp).IgnoreError();
  FJORD_RETURN_IF_ERROR(StorageError(env->CreateDir(tmp)));

  auto fail = [&](absl::Status s) {
    env->DeleteRecursively(tmp).IgnoreError();
    return s;
  };
  if (absl::Status s = write_files(tmp); !s.ok()) return fail(s);

  // Read back every file for the manifest and fsync it, then the manifest,
  // then every directory.
  std::vector<std::string> files, dirs;
  if (absl::Status s = ListTree(env, tmp, "", 0, &files, &dirs); !s.ok()) {
    return fail(StorageError(s));
  }
  std::sort(files.begin(), files.end());
  nlohmann::json manifest = {{"format", "fjord.checkpoint"}, {"version", 1}, {"step", step}};
  manifest["files"] = nlohmann::json::object();
  for (const std::string& rel : files) {
    const std::string path = JoinPath(tmp, rel);
    absl::StatusOr<FileDigest> d = Digest(env, path);
    if (!d.ok()) return fail(StorageError(d.status()));
    manifest["files"][rel] = {{"size", d->size}, {"sha256", d->sha256}};
    if (absl::Status s = env->SyncFile(path); !s.ok()) return fail(StorageError(s));
  }
  if (absl::Status s = WriteSynced(env, JoinPath(tmp, kManifest), manifest.dump(2) + "\n");
      !s.ok()) {
    return fail(StorageError(s));
  }
  for (const std::string& d : dirs) {
    if (absl::Status s = env->SyncDir(d); !s.ok()) return fail(StorageError(s));
  }

  // Replace a checkpoint of the same step (a resumed run repeating it): it
  // moves aside and is deleted only once the new one is in place (put back
  // if that fails; a crash in between leaves a step-*.old-* directory, never
  // found as a checkpoint and removed by the next write).
  std::string old;
  if (env->FileExists(final_dir)) {
    old = absl::StrCat(final_dir, ".old-", ::getpid());
    env->DeleteRecursively(old).IgnoreError();
    if (absl::Status s = env->RenameDir(final_dir, old); !s.ok()) return fail(StorageError(s));
  }
  if (absl::Status s = env->RenameDir(tmp, final_dir); !s.ok()) {
    if (!old.empty()) env->RenameDir(old, final_dir).IgnoreError();
    return fail(StorageError(s));
  }
  FJORD_RETURN_IF_ERROR(StorageError(env->SyncDir(root)));
  if (!old.empty()) env->DeleteRecursively(old).IgnoreError();

  if (keep_last > 0) {
    std::vector<FoundCheckpoint> all = ListCheckpoints(root, env);
    for (size_t i = 0; i + static_cast<size_t>(keep_last) < all.size(); ++i) {
      env->DeleteRecursively(all[i].dir).IgnoreError();  // best effort; a leftover is harmless
    }
  }
  return final_dir;
}

}  // namespace

absl::StatusOr<std::string> WriteCheckpoint(
    const std::string& root, int64_t step, int64_t keep_last,
    const std::function<absl::Status(const std::string& tmp_dir)>& write_files, Env* env) {
  if (env == nullptr) env = Env::Default();
  absl::StatusOr<std::string> r = WriteCheckpointImpl(root, step, keep_last, write_files, env);
  // A path that vanished under a checkpoint being written is the storage's
  // fault, not a missing input of the job (NotFound means "fix your config"
  // to fjord-train's callers): Unavailable.
  if (r.status().code() == absl::StatusCode::kNotFound) {
    return absl::UnavailableError(absl::StrCat(
        r.status().message(), " (was the output directory deleted or its storage unmounted?)"));
  }
  return r;
}

}  // namespace fjord::train
