#include "bench/dataset.h"

#include <hdf5.h>

#include <algorithm>
#include <bit>
#include <cerrno>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <limits>
#include <memory>
#include <random>
#include <string_view>
#include <system_error>
#include <type_traits>

namespace vecgpu::bench {
namespace {

namespace fs = std::filesystem;

// TEXMEX files are little-endian and read by memcpy.
static_assert(std::endian::native == std::endian::little, "TEXMEX readers assume little-endian");

// Largest dimension any reader accepts (GIST has 960, deep1B 96); larger is a corrupt header.
constexpr int64_t kMaxDim = 100000;
// TEXMEX files are read this many bytes (whole rows) at a time.
constexpr size_t kReadChunkBytes = size_t{4} << 20;
// A compressed HDF5 dataset may decode to at most this many times its stored bytes; beyond
// it the dimensions are taken to be forged rather than allocated.
constexpr int64_t kMaxHdf5Expansion = 1024;

std::string Quoted(const std::string& path) { return "'" + path + "'"; }

struct FileCloser {
  void operator()(FILE* f) const { std::fclose(f); }
};
using FilePtr = std::unique_ptr<FILE, FileCloser>;

// Size of the regular file at `path`, or why it cannot be read as one.
StatusOr<int64_t> RegularFileSize(const std::string& path) {
  std::error_code ec;
  const fs::file_status st = fs::status(path, ec);
  if (ec || !fs::exists(st)) return NotFound(Quoted(path) + ": no such file");
  if (!fs::is_regular_file(st)) return InvalidArgument(Quoted(path) + ": not a regular file");
  const uintmax_t size = fs::file_size(path, ec);
  if (ec) return Unavailable(Quoted(path) + ": " + ec.message());
  return static_cast<int64_t>(size);
}

// Reads a TEXMEX file of `In` values into `out` as `Out`. Every size is checked against the
// file's length before anything is allocated, and every row's dimension header is checked.
template <typename In, typename Out>
Status ReadVecs(const std::string& path, int64_t max_rows, std::vector<Out>* out, int64_t* rows_out,
                int64_t* cols_out) {
  ASSIGN_OR_RETURN(const int64_t size, RegularFileSize(path));
  FilePtr f(std::fopen(path.c_str(), "rb"));
  if (!f) return Unavailable(Quoted(path) + ": " + std::strerror(errno));
  if (size < static_cast<int64_t>(sizeof(int32_t))) {
    return InvalidArgument(Quoted(path) + ": empty or truncated (" + std::to_string(size) +
                           " bytes)");
  }
  int32_t d = 0;
  if (std::fread(&d, sizeof(d), 1, f.get()) != 1) {
    return InvalidArgument(Quoted(path) + ": cannot read the first dimension header");
  }
  if (d <= 0 || d > kMaxDim) {
    return InvalidArgument(Quoted(path) + ": dimension " + std::to_string(d) +
                           " out of range [1, " + std::to_string(kMaxDim) + "]");
  }
  const int64_t row_bytes = static_cast<int64_t>(sizeof(int32_t)) + d * int64_t{sizeof(In)};
  if (size % row_bytes != 0) {
    return InvalidArgument(Quoted(path) + ": truncated or corrupt: " + std::to_string(size) +
                           " bytes is not a whole number of rows of dimension " +
                           std::to_string(d) + " (" + std::to_string(row_bytes) + " bytes each)");
  }
  int64_t rows = size / row_bytes;
  if (max_rows >= 0) rows = std::min(rows, max_rows);
  out->assign(static_cast<size_t>(rows * d), Out{});
  if (std::fseek(f.get(), 0, SEEK_SET) != 0) {
    return Unavailable(Quoted(path) + ": " + std::strerror(errno));
  }
  const int64_t chunk_rows = std::max<int64_t>(1, kReadChunkBytes / row_bytes);
  std::vector<char> buf(static_cast<size_t>(std::min(rows, chunk_rows) * row_bytes));
  for (int64_t first = 0; first < rows; first += chunk_rows) {
    const int64_t n = std::min(chunk_rows, rows - first);
    const size_t want = static_cast<size_t>(n * row_bytes);
    if (std::fread(buf.data(), 1, want, f.get()) != want) {
      if (std::ferror(f.get())) return Unavailable(Quoted(path) + ": read error");
      return InvalidArgument(Quoted(path) + ": truncated while reading (file changed?)");
    }
    for (int64_t i = 0; i < n; ++i) {
      const char* row = buf.data() + i * row_bytes;
      int32_t row_d = 0;
      std::memcpy(&row_d, row, sizeof(row_d));
      if (row_d != d) {
        return InvalidArgument(Quoted(path) + ": row " + std::to_string(first + i) +
                               " has dimension " + std::to_string(row_d) + ", expected " +
                               std::to_string(d));
      }
      const char* values = row + sizeof(int32_t);
      Out* dst = out->data() + (first + i) * d;
      if constexpr (std::is_same_v<In, Out>) {
        std::memcpy(dst, values, d * sizeof(In));
      } else {
        for (int32_t j = 0; j < d; ++j) {
          In v;
          std::memcpy(&v, values + j * sizeof(In), sizeof(In));
          dst[j] = static_cast<Out>(v);
        }
      }
    }
  }
  *rows_out = rows;
  *cols_out = d;
  return Status::Ok();
}

// Writes rows x cols values as a TEXMEX file: to "<path>.tmp", then renamed over `path`, so a
// reader never sees half a file.
template <typename T>
Status WriteVecs(const std::string& path, const T* data, int64_t rows, int64_t cols) {
  if (cols <= 0 || cols > kMaxDim) {
    return InvalidArgument(Quoted(path) + ": cannot write dimension " + std::to_string(cols));
  }
  if (rows <= 0) return InvalidArgument(Quoted(path) + ": no rows to write");
  const std::string tmp = path + ".tmp";
  FilePtr f(std::fopen(tmp.c_str(), "wb"));
  if (!f) return Unavailable(Quoted(tmp) + ": " + std::strerror(errno));
  const int32_t d = static_cast<int32_t>(cols);
  bool ok = true;
  for (int64_t i = 0; i < rows && ok; ++i) {
    ok = std::fwrite(&d, sizeof(d), 1, f.get()) == 1 &&
         std::fwrite(data + i * cols, sizeof(T), cols, f.get()) == static_cast<size_t>(cols);
  }
  ok = ok && std::fflush(f.get()) == 0;
  ok = std::fclose(f.release()) == 0 && ok;
  std::error_code ec;
  if (!ok) {
    fs::remove(tmp, ec);
    return Unavailable(Quoted(tmp) + ": write failed");
  }
  fs::rename(tmp, path, ec);
  if (ec) {
    fs::remove(tmp, ec);
    return Unavailable(Quoted(path) + ": cannot rename the written file: " + ec.message());
  }
  return Status::Ok();
}

// ---- HDF5 ----

// Owns one HDF5 identifier and closes it with the matching H5*close function.
class H5Id {
 public:
  using Closer = herr_t (*)(hid_t);
  H5Id(hid_t id, Closer close) : id_(id), close_(close) {}
  H5Id(const H5Id&) = delete;
  H5Id& operator=(const H5Id&) = delete;
  ~H5Id() {
    if (id_ >= 0) close_(id_);
  }
  hid_t get() const { return id_; }
  bool valid() const { return id_ >= 0; }

 private:
  hid_t id_;
  Closer close_;
};

// Silences HDF5's default error printing for its lifetime (failures become Status instead).
// HDF5's error stack is process-wide: not thread-safe against other HDF5 users.
class H5QuietErrors {
 public:
  H5QuietErrors() {
    H5Eget_auto2(H5E_DEFAULT, &func_, &data_);
    H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr);
  }
  H5QuietErrors(const H5QuietErrors&) = delete;
  H5QuietErrors& operator=(const H5QuietErrors&) = delete;
  ~H5QuietErrors() { H5Eset_auto2(H5E_DEFAULT, func_, data_); }

 private:
  H5E_auto2_t func_ = nullptr;
  void* data_ = nullptr;
};

// A 2-D numeric HDF5 dataset read into memory as `T` (HDF5 converts from the stored type).
template <typename T>
struct H5Matrix {
  int64_t rows = 0;
  int64_t cols = 0;
  std::vector<T> data;
};

// Reads the 2-D dataset `name`. `integer_only` refuses float storage (for neighbour ids).
// The declared shape is checked against the bytes the file actually stores before allocating.
template <typename T>
StatusOr<H5Matrix<T>> ReadH5Matrix(hid_t file, const std::string& path, int64_t file_size,
                                   const char* name, hid_t mem_type, bool integer_only) {
  const std::string what = Quoted(path) + " dataset '" + name + "'";
  if (H5Lexists(file, name, H5P_DEFAULT) <= 0) return NotFound(what + ": missing");
  H5Id dset(H5Dopen2(file, name, H5P_DEFAULT), H5Dclose);
  if (!dset.valid()) return InvalidArgument(what + ": not a dataset");
  H5Id type(H5Dget_type(dset.get()), H5Tclose);
  const H5T_class_t cls = type.valid() ? H5Tget_class(type.get()) : H5T_NO_CLASS;
  if (cls != H5T_INTEGER && (integer_only || cls != H5T_FLOAT)) {
    return InvalidArgument(what + (integer_only ? ": not integers" : ": not numeric"));
  }
  H5Id space(H5Dget_space(dset.get()), H5Sclose);
  if (!space.valid() || H5Sget_simple_extent_type(space.get()) != H5S_SIMPLE ||
      H5Sget_simple_extent_ndims(space.get()) != 2) {
    return InvalidArgument(what + ": not a 2-D array");
  }
  hsize_t dims[2] = {0, 0};
  H5Sget_simple_extent_dims(space.get(), dims, nullptr);
  if (dims[0] == 0 || dims[1] == 0 || dims[1] > static_cast<hsize_t>(kMaxDim)) {
    return InvalidArgument(what + ": shape " + std::to_string(dims[0]) + " x " +
                           std::to_string(dims[1]) + " out of range (columns 1.." +
                           std::to_string(kMaxDim) + ")");
  }
  const int64_t elem_bytes = static_cast<int64_t>(H5Tget_size(type.get()));
  const int64_t stored = static_cast<int64_t>(H5Dget_storage_size(dset.get()));
  // Bounds rows * cols * elem_bytes (numeric types are at most 16 bytes) below int64 overflow.
  const int64_t max_rows = std::numeric_limits<int64_t>::max() / 16 / static_cast<int64_t>(dims[1]);
  if (elem_bytes <= 0 || elem_bytes > 16 || stored <= 0 || stored > file_size ||
      dims[0] > static_cast<hsize_t>(max_rows) ||
      static_cast<int64_t>(dims[0] * dims[1]) * elem_bytes > stored * kMaxHdf5Expansion) {
    return InvalidArgument(what + ": declared shape " + std::to_string(dims[0]) + " x " +
                           std::to_string(dims[1]) + " does not match the " +
                           std::to_string(stored) + " bytes stored (corrupt file?)");
  }
  H5Matrix<T> m;
  m.rows = static_cast<int64_t>(dims[0]);
  m.cols = static_cast<int64_t>(dims[1]);
  m.data.resize(static_cast<size_t>(m.rows * m.cols));
  if (H5Dread(dset.get(), mem_type, H5S_ALL, H5S_ALL, H5P_DEFAULT, m.data.data()) < 0) {
    return InvalidArgument(what + ": read failed");
  }
  return m;
}

// Reads the scalar string attribute `name` of the file, fixed- or variable-length.
StatusOr<std::string> ReadH5StringAttr(hid_t file, const std::string& path, const char* name) {
  const std::string what = Quoted(path) + " attribute '" + name + "'";
  if (H5Aexists(file, name) <= 0) return NotFound(what + ": missing");
  H5Id attr(H5Aopen(file, name, H5P_DEFAULT), H5Aclose);
  H5Id type(attr.valid() ? H5Aget_type(attr.get()) : -1, H5Tclose);
  H5Id space(attr.valid() ? H5Aget_space(attr.get()) : -1, H5Sclose);
  if (!type.valid() || !space.valid() || H5Tget_class(type.get()) != H5T_STRING ||
      H5Sget_simple_extent_npoints(space.get()) != 1) {
    return InvalidArgument(what + ": not a single string");
  }
  H5Id mem(H5Tcopy(H5T_C_S1), H5Tclose);
  H5Tset_cset(mem.get(), H5Tget_cset(type.get()));
  if (H5Tis_variable_str(type.get()) > 0) {
    H5Tset_size(mem.get(), H5T_VARIABLE);
    char* s = nullptr;
    if (H5Aread(attr.get(), mem.get(), &s) < 0 || s == nullptr) {
      return InvalidArgument(what + ": read failed");
    }
    std::string value(s);
    H5free_memory(s);
    return value;
  }
  const size_t len = H5Tget_size(type.get());
  if (len == 0 || len > 4096) return InvalidArgument(what + ": implausible length");
  H5Tset_size(mem.get(), len + 1);
  H5Tset_strpad(mem.get(), H5T_STR_NULLTERM);
  std::string value(len + 1, '\0');
  if (H5Aread(attr.get(), mem.get(), value.data()) < 0) {
    return InvalidArgument(what + ": read failed");
  }
  value.resize(std::strlen(value.c_str()));
  return value;
}

// Scales every row to unit L2 norm (zero rows stay zero).
void NormalizeRows(FloatMatrix& m) {
  for (int64_t i = 0; i < m.rows; ++i) {
    float* row = m.data.data() + i * m.cols;
    double sq = 0;
    for (int64_t j = 0; j < m.cols; ++j) sq += double{row[j]} * row[j];
    if (sq <= 0) continue;
    const float inv = static_cast<float>(1.0 / std::sqrt(sq));
    for (int64_t j = 0; j < m.cols; ++j) row[j] *= inv;
  }
}

// ---- LoadDataset helpers ----

bool EndsWith(std::string_view s, std::string_view suffix) {
  return s.size() >= suffix.size() && s.substr(s.size() - suffix.size()) == suffix;
}

template <typename T>
Status ParseNumber(std::string_view key, std::string_view text, T* out) {
  const char* end = text.data() + text.size();
  auto [ptr, ec] = std::from_chars(text.data(), end, *out);
  if (ec != std::errc() || ptr != end) {
    return InvalidArgument("synthetic spec: bad value '" + std::string(text) + "' for " +
                           std::string(key));
  }
  return Status::Ok();
}

// Parses "synthetic[:key=value,...]" (keys n, nq, d, clusters, seed, spread) and generates it.
StatusOr<Dataset> LoadSynthetic(std::string_view params) {
  int64_t n = 100000, nq = 1000, d = 128, clusters = 100;
  uint64_t seed = 1;
  float spread = 0.3f;
  while (!params.empty()) {
    const size_t comma = params.find(',');
    const std::string_view item = params.substr(0, comma);
    params = comma == std::string_view::npos ? std::string_view() : params.substr(comma + 1);
    const size_t eq = item.find('=');
    if (eq == std::string_view::npos) {
      return InvalidArgument("synthetic spec: expected key=value, got '" + std::string(item) + "'");
    }
    const std::string_view key = item.substr(0, eq), value = item.substr(eq + 1);
    if (key == "n") {
      RETURN_IF_ERROR(ParseNumber(key, value, &n));
    } else if (key == "nq") {
      RETURN_IF_ERROR(ParseNumber(key, value, &nq));
    } else if (key == "d") {
      RETURN_IF_ERROR(ParseNumber(key, value, &d));
    } else if (key == "clusters") {
      RETURN_IF_ERROR(ParseNumber(key, value, &clusters));
    } else if (key == "seed") {
      RETURN_IF_ERROR(ParseNumber(key, value, &seed));
    } else if (key == "spread") {
      RETURN_IF_ERROR(ParseNumber(key, value, &spread));
    } else {
      return InvalidArgument("synthetic spec: unknown key '" + std::string(key) +
                             "' (n, nq, d, clusters, seed, spread)");
    }
  }
  constexpr int64_t kMaxFloats = int64_t{1} << 36;  // 256 GiB: a typo, not a benchmark
  if (n <= 0 || nq <= 0 || d <= 0 || d > kMaxDim || clusters <= 0 || clusters > n ||
      !(spread >= 0) || !std::isfinite(spread) || n > kMaxFloats / d || nq > kMaxFloats / d) {
    return InvalidArgument(
        "synthetic spec: need n, nq > 0, 0 < clusters <= n, 0 < d <= " + std::to_string(kMaxDim) +
        ", finite spread >= 0, and n*d, nq*d <= " + std::to_string(kMaxFloats));
  }
  return Synthetic(n, nq, static_cast<int>(d), static_cast<int>(clusters), seed, spread);
}

// Reads a .fvecs or .bvecs file (by extension) as floats.
StatusOr<FloatMatrix> ReadVecsByExtension(const std::string& path) {
  if (EndsWith(path, ".bvecs")) return ReadBvecs(path);
  return ReadFvecs(path);
}

// The SIFT layout: "<prefix>_base.fvecs", "<prefix>_query.fvecs", "<prefix>_groundtruth.ivecs".
StatusOr<Dataset> LoadTexmex(const std::string& base_path) {
  const std::string ext = base_path.substr(base_path.size() - 6);  // ".fvecs" or ".bvecs"
  std::string prefix = base_path.substr(0, base_path.size() - ext.size());
  if (EndsWith(prefix, "_base")) prefix.resize(prefix.size() - 5);

  Dataset data;
  data.name = fs::path(prefix).filename().string();
  ASSIGN_OR_RETURN(data.base, ReadVecsByExtension(base_path));
  std::error_code ec;
  std::string query_path = prefix + "_query" + ext;
  if (!fs::exists(query_path, ec)) query_path = prefix + "_query.fvecs";
  ASSIGN_OR_RETURN(data.queries, ReadVecsByExtension(query_path));
  if (data.queries.cols != data.base.cols) {
    return InvalidArgument(Quoted(query_path) + ": dimension " + std::to_string(data.queries.cols) +
                           " but the base has " + std::to_string(data.base.cols));
  }
  const std::string gt_path = prefix + "_groundtruth.ivecs";
  if (fs::exists(gt_path, ec)) {
    int cols = 0;
    ASSIGN_OR_RETURN(data.neighbors, ReadIvecs(gt_path, &cols));
    if (static_cast<int64_t>(data.neighbors.size()) != data.queries.rows * cols) {
      return InvalidArgument(Quoted(gt_path) + ": " + std::to_string(data.neighbors.size() / cols) +
                             " rows for " + std::to_string(data.queries.rows) + " queries");
    }
    for (int32_t id : data.neighbors) {
      if (id < 0 || id >= data.base.rows) {
        return InvalidArgument(Quoted(gt_path) + ": neighbour id " + std::to_string(id) +
                               " outside the base of " + std::to_string(data.base.rows));
      }
    }
    data.gt_k = cols;
  }
  return data;
}

}  // namespace

Dataset Synthetic(int64_t n, int64_t nq, int d, int clusters, uint64_t seed, float spread) {
  n = std::max<int64_t>(n, 0);
  nq = std::max<int64_t>(nq, 0);
  d = std::max(d, 1);
  clusters = std::max(clusters, 1);
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<float> centres(static_cast<size_t>(clusters) * d);
  for (float& c : centres) c = normal(rng);
  std::uniform_int_distribution<int> pick(0, clusters - 1);
  auto fill = [&](FloatMatrix& m, int64_t rows) {
    m.rows = rows;
    m.cols = d;
    m.data.resize(static_cast<size_t>(rows * d));
    for (int64_t i = 0; i < rows; ++i) {
      const float* centre = centres.data() + static_cast<int64_t>(pick(rng)) * d;
      float* row = m.data.data() + i * d;
      for (int j = 0; j < d; ++j) row[j] = centre[j] + spread * normal(rng);
    }
  };
  Dataset data;
  data.name = "synthetic-" + std::to_string(n) + "x" + std::to_string(d);
  fill(data.base, n);
  fill(data.queries, nq);
  data.metric = Metric::kL2;
  return data;
}

StatusOr<FloatMatrix> ReadFvecs(const std::string& path, int64_t max_rows) {
  FloatMatrix m;
  RETURN_IF_ERROR(ReadVecs<float>(path, max_rows, &m.data, &m.rows, &m.cols));
  return m;
}

StatusOr<FloatMatrix> ReadBvecs(const std::string& path, int64_t max_rows) {
  FloatMatrix m;
  RETURN_IF_ERROR(ReadVecs<uint8_t>(path, max_rows, &m.data, &m.rows, &m.cols));
  return m;
}

StatusOr<std::vector<int32_t>> ReadIvecs(const std::string& path, int* cols, int64_t max_rows) {
  std::vector<int32_t> v;
  int64_t rows = 0, c = 0;
  RETURN_IF_ERROR(ReadVecs<int32_t>(path, max_rows, &v, &rows, &c));
  *cols = static_cast<int>(c);
  return v;
}

Status WriteFvecs(const std::string& path, const FloatMatrix& m) {
  if (m.rows < 0 || m.cols < 0 || static_cast<int64_t>(m.data.size()) != m.rows * m.cols) {
    return InvalidArgument(Quoted(path) + ": matrix data does not hold rows x cols values");
  }
  return WriteVecs(path, m.data.data(), m.rows, m.cols);
}

Status WriteIvecs(const std::string& path, const std::vector<int32_t>& v, int cols) {
  if (cols <= 0 || v.size() % cols != 0) {
    return InvalidArgument(Quoted(path) + ": " + std::to_string(v.size()) +
                           " values are not whole rows of " + std::to_string(cols));
  }
  return WriteVecs(path, v.data(), static_cast<int64_t>(v.size() / cols), cols);
}

StatusOr<Dataset> ReadAnnHdf5(const std::string& path) {
  ASSIGN_OR_RETURN(const int64_t file_size, RegularFileSize(path));
  H5QuietErrors quiet;
  H5Id file(H5Fopen(path.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT), H5Fclose);
  if (!file.valid()) return InvalidArgument(Quoted(path) + ": not a readable HDF5 file");

  Dataset data;
  data.name = fs::path(path).stem().string();
  ASSIGN_OR_RETURN(const std::string distance, ReadH5StringAttr(file.get(), path, "distance"));
  bool normalize = false;
  if (distance == "euclidean") {
    data.metric = Metric::kL2;
  } else if (distance == "angular") {
    data.metric = Metric::kInnerProduct;
    normalize = true;
  } else if (distance == "dot") {
    data.metric = Metric::kInnerProduct;
  } else {
    return InvalidArgument(Quoted(path) + ": unsupported distance '" + distance +
                           "' (euclidean, angular, dot)");
  }

  ASSIGN_OR_RETURN(auto train, ReadH5Matrix<float>(file.get(), path, file_size, "train",
                                                   H5T_NATIVE_FLOAT, false));
  ASSIGN_OR_RETURN(
      auto test, ReadH5Matrix<float>(file.get(), path, file_size, "test", H5T_NATIVE_FLOAT, false));
  if (test.cols != train.cols) {
    return InvalidArgument(Quoted(path) + ": 'test' has dimension " + std::to_string(test.cols) +
                           " but 'train' has " + std::to_string(train.cols));
  }
  data.base = {train.rows, train.cols, std::move(train.data)};
  data.queries = {test.rows, test.cols, std::move(test.data)};
  if (normalize) {
    NormalizeRows(data.base);
    NormalizeRows(data.queries);
  }

  if (H5Lexists(file.get(), "neighbors", H5P_DEFAULT) > 0) {
    ASSIGN_OR_RETURN(auto gt, ReadH5Matrix<int64_t>(file.get(), path, file_size, "neighbors",
                                                    H5T_NATIVE_INT64, true));
    if (gt.rows != data.queries.rows) {
      return InvalidArgument(Quoted(path) + ": 'neighbors' has " + std::to_string(gt.rows) +
                             " rows for " + std::to_string(data.queries.rows) + " queries");
    }
    data.neighbors.resize(gt.data.size());
    for (size_t i = 0; i < gt.data.size(); ++i) {
      if (gt.data[i] < 0 || gt.data[i] >= data.base.rows) {
        return InvalidArgument(Quoted(path) + ": neighbour id " + std::to_string(gt.data[i]) +
                               " outside 'train' of " + std::to_string(data.base.rows));
      }
      data.neighbors[i] = static_cast<int32_t>(gt.data[i]);
    }
    data.gt_k = static_cast<int>(gt.cols);
  }
  return data;
}

StatusOr<Dataset> LoadDataset(const std::string& spec) {
  constexpr std::string_view kSynthetic = "synthetic";
  if (spec == kSynthetic) return LoadSynthetic({});
  if (spec.starts_with("synthetic:")) return LoadSynthetic(std::string_view(spec).substr(10));
  if (EndsWith(spec, ".hdf5") || EndsWith(spec, ".h5")) return ReadAnnHdf5(spec);
  if (EndsWith(spec, ".fvecs") || EndsWith(spec, ".bvecs")) return LoadTexmex(spec);
  return InvalidArgument("unrecognised dataset '" + spec +
                         "': expected synthetic:k=v,..., a .hdf5/.h5 file, or a "
                         "<prefix>_base.fvecs/.bvecs file");
}

}  // namespace vecgpu::bench
