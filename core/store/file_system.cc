#include "core/store/file_system.h"

namespace vecgpu::store {

Status WriteFileAtomically(FileSystem& fs, const std::string& path,
                           std::initializer_list<std::string_view> pieces) {
  const std::string tmp = path + ".tmp";
  {
    ASSIGN_OR_RETURN(auto file, fs.OpenForAppend(tmp, /*truncate=*/true));
    for (std::string_view piece : pieces) RETURN_IF_ERROR(file->Append(piece));
    RETURN_IF_ERROR(file->Sync());
    RETURN_IF_ERROR(file->Close());
  }
  RETURN_IF_ERROR(fs.Rename(tmp, path));
  const size_t slash = path.find_last_of('/');
  return fs.SyncDir(slash == std::string::npos ? "." : path.substr(0, slash));
}

}  // namespace vecgpu::store
