#include "bench/dataset.h"

#include <gtest/gtest.h>
#include <hdf5.h>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <set>

namespace vecgpu::bench {
namespace {

std::string TempPath(const std::string& name) { return ::testing::TempDir() + name; }

void WriteBytes(const std::string& path, const std::vector<char>& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

std::vector<char> ReadBytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

void AppendInt32(std::vector<char>& bytes, int32_t v) {
  char b[4];
  std::memcpy(b, &v, 4);
  bytes.insert(bytes.end(), b, b + 4);
}

FloatMatrix Matrix(int64_t rows, int64_t cols, std::vector<float> data) {
  return FloatMatrix{rows, cols, std::move(data)};
}

// ---- TEXMEX ----

TEST(TexmexTest, FvecsRoundTrip) {
  const std::string path = TempPath("round.fvecs");
  const FloatMatrix m = Matrix(3, 2, {1.5f, -2, 0, 3.25f, 1e6f, -1e-6f});
  ASSERT_TRUE(WriteFvecs(path, m).ok());
  EXPECT_EQ(std::filesystem::file_size(path), 3u * (4 + 2 * 4));
  StatusOr<FloatMatrix> back = ReadFvecs(path);
  ASSERT_TRUE(back.ok()) << back.status().ToString();
  EXPECT_EQ(back->rows, 3);
  EXPECT_EQ(back->cols, 2);
  EXPECT_EQ(back->data, m.data);

  StatusOr<FloatMatrix> first2 = ReadFvecs(path, 2);
  ASSERT_TRUE(first2.ok());
  EXPECT_EQ(first2->rows, 2);
  EXPECT_EQ(first2->data, std::vector<float>(m.data.begin(), m.data.begin() + 4));
}

TEST(TexmexTest, IvecsRoundTrip) {
  const std::string path = TempPath("round.ivecs");
  const std::vector<int32_t> v = {7, -1, 2147483647, 0, 5, 6};
  ASSERT_TRUE(WriteIvecs(path, v, 3).ok());
  int cols = 0;
  StatusOr<std::vector<int32_t>> back = ReadIvecs(path, &cols);
  ASSERT_TRUE(back.ok()) << back.status().ToString();
  EXPECT_EQ(cols, 3);
  EXPECT_EQ(*back, v);
  EXPECT_FALSE(std::filesystem::exists(path + ".tmp"));
}

TEST(TexmexTest, WritersRefuseBadShapes) {
  EXPECT_FALSE(WriteIvecs(TempPath("bad.ivecs"), {1, 2, 3}, 2).ok());
  EXPECT_FALSE(WriteIvecs(TempPath("bad.ivecs"), {1, 2}, 0).ok());
  EXPECT_FALSE(WriteFvecs(TempPath("bad.fvecs"), Matrix(2, 2, {1, 2, 3})).ok());
  EXPECT_FALSE(WriteFvecs(TempPath("bad.fvecs"), Matrix(0, 2, {})).ok());
}

TEST(TexmexTest, BvecsHandWritten) {
  const std::string path = TempPath("hand.bvecs");
  std::vector<char> bytes;
  AppendInt32(bytes, 3);
  for (unsigned char c : {0, 128, 255}) bytes.push_back(static_cast<char>(c));
  AppendInt32(bytes, 3);
  for (unsigned char c : {1, 2, 3}) bytes.push_back(static_cast<char>(c));
  WriteBytes(path, bytes);
  StatusOr<FloatMatrix> m = ReadBvecs(path);
  ASSERT_TRUE(m.ok()) << m.status().ToString();
  EXPECT_EQ(m->rows, 2);
  EXPECT_EQ(m->cols, 3);
  EXPECT_EQ(m->data, (std::vector<float>{0, 128, 255, 1, 2, 3}));
}

TEST(TexmexTest, TruncatedFileRefused) {
  const std::string path = TempPath("trunc.fvecs");
  ASSERT_TRUE(WriteFvecs(path, Matrix(2, 4, std::vector<float>(8, 1.0f))).ok());
  std::vector<char> bytes = ReadBytes(path);
  bytes.pop_back();
  WriteBytes(path, bytes);
  StatusOr<FloatMatrix> m = ReadFvecs(path);
  ASSERT_FALSE(m.ok());
  EXPECT_EQ(m.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(m.status().message().find(path), std::string::npos) << m.status().message();
  EXPECT_NE(m.status().message().find("truncated"), std::string::npos);
}

TEST(TexmexTest, CorruptRowHeaderRefused) {
  // Two rows of dimension 2 where the second header says 3: same size, wrong header.
  const std::string path = TempPath("corrupt.ivecs");
  std::vector<char> bytes;
  AppendInt32(bytes, 2);
  AppendInt32(bytes, 10);
  AppendInt32(bytes, 11);
  AppendInt32(bytes, 3);
  AppendInt32(bytes, 12);
  AppendInt32(bytes, 13);
  WriteBytes(path, bytes);
  int cols = 0;
  StatusOr<std::vector<int32_t>> v = ReadIvecs(path, &cols);
  ASSERT_FALSE(v.ok());
  EXPECT_EQ(v.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(v.status().message().find("row 1"), std::string::npos) << v.status().message();
  // Reading only the first row never looks at the bad header.
  EXPECT_TRUE(ReadIvecs(path, &cols, 1).ok());
}

TEST(TexmexTest, BadDimensionsRefused) {
  int cols = 0;
  for (int32_t d : {0, -4, 100001, 2147483647}) {
    const std::string path = TempPath("dim.ivecs");
    std::vector<char> bytes;
    AppendInt32(bytes, d);
    AppendInt32(bytes, 1);  // 8 bytes: a multiple of the row size for d = 1 only
    WriteBytes(path, bytes);
    StatusOr<std::vector<int32_t>> v = ReadIvecs(path, &cols);
    ASSERT_FALSE(v.ok()) << d;
    EXPECT_EQ(v.status().code(), StatusCode::kInvalidArgument);
    EXPECT_NE(v.status().message().find("dimension"), std::string::npos) << v.status().message();
  }
  // A huge but legal dimension in a tiny file: refused by size, nothing allocated.
  const std::string path = TempPath("huge.fvecs");
  std::vector<char> bytes;
  AppendInt32(bytes, 100000);
  AppendInt32(bytes, 0);
  WriteBytes(path, bytes);
  EXPECT_EQ(ReadFvecs(path).status().code(), StatusCode::kInvalidArgument);
}

TEST(TexmexTest, EmptyAndMissingFilesRefused) {
  const std::string path = TempPath("empty.fvecs");
  WriteBytes(path, {});
  EXPECT_EQ(ReadFvecs(path).status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(ReadFvecs(TempPath("no-such-file.fvecs")).status().code(), StatusCode::kNotFound);
  EXPECT_EQ(ReadFvecs(::testing::TempDir()).status().code(), StatusCode::kInvalidArgument);
}

// ---- HDF5 (ann-benchmarks layout) ----

// Writes an ann-benchmarks style file with the HDF5 C API; the file is closed on destruction.
class AnnFileWriter {
 public:
  explicit AnnFileWriter(const std::string& path)
      : file_(H5Fcreate(path.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT)) {}
  ~AnnFileWriter() { H5Fclose(file_); }

  void Floats(const char* name, hsize_t rows, hsize_t cols, const std::vector<float>& v,
              hid_t file_type = H5T_IEEE_F32LE) {
    Write(name, rows, cols, H5T_NATIVE_FLOAT, file_type, v.data());
  }
  void Ints(const char* name, hsize_t rows, hsize_t cols, const std::vector<int32_t>& v) {
    Write(name, rows, cols, H5T_NATIVE_INT32, H5T_STD_I32LE, v.data());
  }
  void Floats1D(const char* name, const std::vector<float>& v) {
    const hsize_t dims[1] = {v.size()};
    const hid_t space = H5Screate_simple(1, dims, nullptr);
    const hid_t d =
        H5Dcreate2(file_, name, H5T_IEEE_F32LE, space, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    H5Dwrite(d, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, v.data());
    H5Dclose(d);
    H5Sclose(space);
  }
  // A chunked float dataset of the given shape with nothing written to it.
  void EmptyChunked(const char* name, hsize_t rows, hsize_t cols) {
    const hsize_t dims[2] = {rows, cols};
    const hsize_t chunk[2] = {1024, cols};
    const hid_t space = H5Screate_simple(2, dims, nullptr);
    const hid_t dcpl = H5Pcreate(H5P_DATASET_CREATE);
    H5Pset_chunk(dcpl, 2, chunk);
    H5Dclose(H5Dcreate2(file_, name, H5T_IEEE_F32LE, space, H5P_DEFAULT, dcpl, H5P_DEFAULT));
    H5Pclose(dcpl);
    H5Sclose(space);
  }
  // The "distance" attribute as a variable-length string (as h5py writes it) or fixed-length.
  void Distance(const std::string& value, bool vlen = true) {
    const hid_t type = H5Tcopy(H5T_C_S1);
    H5Tset_size(type, vlen ? H5T_VARIABLE : value.size());
    const hid_t space = H5Screate(H5S_SCALAR);
    const hid_t attr = H5Acreate2(file_, "distance", type, space, H5P_DEFAULT, H5P_DEFAULT);
    const char* s = value.c_str();
    if (vlen) {
      H5Awrite(attr, type, &s);
    } else {
      H5Awrite(attr, type, s);
    }
    H5Aclose(attr);
    H5Sclose(space);
    H5Tclose(type);
  }

 private:
  void Write(const char* name, hsize_t rows, hsize_t cols, hid_t mem_type, hid_t file_type,
             const void* data) {
    const hsize_t dims[2] = {rows, cols};
    const hid_t space = H5Screate_simple(2, dims, nullptr);
    const hid_t d =
        H5Dcreate2(file_, name, file_type, space, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    H5Dwrite(d, mem_type, H5S_ALL, H5S_ALL, H5P_DEFAULT, data);
    H5Dclose(d);
    H5Sclose(space);
  }

  hid_t file_;
};

TEST(AnnHdf5Test, EuclideanReadBack) {
  const std::string path = TempPath("tiny-euclidean.hdf5");
  {
    AnnFileWriter w(path);
    w.Floats("train", 3, 2, {1, 2, 3, 4, 5, 6});
    w.Floats("test", 2, 2, {0.5f, 0.5f, 5, 5});
    w.Ints("neighbors", 2, 2, {0, 1, 2, 1});
    w.Floats("distances", 2, 2, {0.5f, 1, 1, 2});
    w.Distance("euclidean");
  }
  StatusOr<Dataset> d = ReadAnnHdf5(path);
  ASSERT_TRUE(d.ok()) << d.status().ToString();
  EXPECT_EQ(d->name, "tiny-euclidean");
  EXPECT_EQ(d->metric, Metric::kL2);
  EXPECT_EQ(d->base.rows, 3);
  EXPECT_EQ(d->base.cols, 2);
  EXPECT_EQ(d->base.data, (std::vector<float>{1, 2, 3, 4, 5, 6}));
  EXPECT_EQ(d->queries.rows, 2);
  EXPECT_EQ(d->queries.data, (std::vector<float>{0.5f, 0.5f, 5, 5}));
  EXPECT_EQ(d->gt_k, 2);
  EXPECT_EQ(d->neighbors, (std::vector<int32_t>{0, 1, 2, 1}));

  // The same file through LoadDataset.
  StatusOr<Dataset> loaded = LoadDataset(path);
  ASSERT_TRUE(loaded.ok()) << loaded.status().ToString();
  EXPECT_EQ(loaded->base.data, d->base.data);
}

TEST(AnnHdf5Test, AngularNormalisesAndUsesInnerProduct) {
  const std::string path = TempPath("tiny-angular.h5");
  {
    AnnFileWriter w(path);
    // Stored as float64 to check the type conversion too; no neighbours in this file.
    w.Floats("train", 2, 2, {3, 4, 0, 0}, H5T_IEEE_F64LE);
    w.Floats("test", 1, 2, {0, 2});
    w.Distance("angular", /*vlen=*/false);
  }
  StatusOr<Dataset> d = ReadAnnHdf5(path);
  ASSERT_TRUE(d.ok()) << d.status().ToString();
  EXPECT_EQ(d->metric, Metric::kInnerProduct);
  EXPECT_FLOAT_EQ(d->base.data[0], 0.6f);
  EXPECT_FLOAT_EQ(d->base.data[1], 0.8f);
  EXPECT_EQ(d->base.data[2], 0.0f);  // zero rows stay zero
  EXPECT_EQ(d->base.data[3], 0.0f);
  EXPECT_FLOAT_EQ(d->queries.data[1], 1.0f);
  EXPECT_TRUE(d->neighbors.empty());
  EXPECT_EQ(d->gt_k, 0);
}

TEST(AnnHdf5Test, DotKeepsVectors) {
  const std::string path = TempPath("tiny-dot.hdf5");
  {
    AnnFileWriter w(path);
    w.Floats("train", 1, 2, {3, 4});
    w.Floats("test", 1, 2, {0, 2});
    w.Distance("dot");
  }
  StatusOr<Dataset> d = ReadAnnHdf5(path);
  ASSERT_TRUE(d.ok()) << d.status().ToString();
  EXPECT_EQ(d->metric, Metric::kInnerProduct);
  EXPECT_EQ(d->base.data, (std::vector<float>{3, 4}));
}

TEST(AnnHdf5Test, BadFilesRefused) {
  auto expect_refused = [](const std::string& path, const char* fragment) {
    StatusOr<Dataset> d = ReadAnnHdf5(path);
    ASSERT_FALSE(d.ok()) << path;
    EXPECT_NE(d.status().message().find(fragment), std::string::npos) << d.status().message();
  };
  {
    AnnFileWriter w(TempPath("no-test.hdf5"));
    w.Floats("train", 1, 2, {1, 2});
    w.Distance("euclidean");
  }
  expect_refused(TempPath("no-test.hdf5"), "'test'");
  {
    AnnFileWriter w(TempPath("rank1.hdf5"));
    w.Floats1D("train", {1, 2});
    w.Floats("test", 1, 2, {1, 2});
    w.Distance("euclidean");
  }
  expect_refused(TempPath("rank1.hdf5"), "2-D");
  {
    AnnFileWriter w(TempPath("dims.hdf5"));
    w.Floats("train", 1, 2, {1, 2});
    w.Floats("test", 1, 3, {1, 2, 3});
    w.Distance("euclidean");
  }
  expect_refused(TempPath("dims.hdf5"), "dimension");
  {
    AnnFileWriter w(TempPath("float-gt.hdf5"));
    w.Floats("train", 1, 2, {1, 2});
    w.Floats("test", 1, 2, {1, 2});
    w.Floats("neighbors", 1, 1, {0});
    w.Distance("euclidean");
  }
  expect_refused(TempPath("float-gt.hdf5"), "not integers");
  {
    AnnFileWriter w(TempPath("gt-range.hdf5"));
    w.Floats("train", 1, 2, {1, 2});
    w.Floats("test", 1, 2, {1, 2});
    w.Ints("neighbors", 1, 1, {1});
    w.Distance("euclidean");
  }
  expect_refused(TempPath("gt-range.hdf5"), "outside");
  {
    AnnFileWriter w(TempPath("jaccard.hdf5"));
    w.Floats("train", 1, 2, {1, 2});
    w.Floats("test", 1, 2, {1, 2});
    w.Distance("jaccard");
  }
  expect_refused(TempPath("jaccard.hdf5"), "jaccard");
  {
    AnnFileWriter w(TempPath("no-distance.hdf5"));
    w.Floats("train", 1, 2, {1, 2});
    w.Floats("test", 1, 2, {1, 2});
  }
  expect_refused(TempPath("no-distance.hdf5"), "distance");
  {
    // Declares 10^7 x 1000 floats (40 GB) but stores none: refused before allocating.
    AnnFileWriter w(TempPath("forged.hdf5"));
    w.Floats("test", 1, 2, {1, 2});
    w.Distance("euclidean");
    w.EmptyChunked("train", 10000000, 1000);
  }
  expect_refused(TempPath("forged.hdf5"), "bytes stored");
  WriteBytes(TempPath("not.hdf5"), {'n', 'o', 'p', 'e'});
  expect_refused(TempPath("not.hdf5"), "HDF5");
}

// ---- Synthetic and LoadDataset ----

TEST(SyntheticTest, DeterministicPerSeed) {
  const Dataset a = Synthetic(200, 20, 8, 5, 42);
  const Dataset b = Synthetic(200, 20, 8, 5, 42);
  const Dataset c = Synthetic(200, 20, 8, 5, 43);
  EXPECT_EQ(a.base.rows, 200);
  EXPECT_EQ(a.base.cols, 8);
  EXPECT_EQ(a.base.data.size(), 200u * 8);
  EXPECT_EQ(a.queries.rows, 20);
  EXPECT_EQ(a.queries.data.size(), 20u * 8);
  EXPECT_EQ(a.name, "synthetic-200x8");
  EXPECT_EQ(a.base.data, b.base.data);
  EXPECT_EQ(a.queries.data, b.queries.data);
  EXPECT_NE(a.base.data, c.base.data);
  EXPECT_NE(a.queries.data, c.queries.data);
}

double Dist2(const float* a, const float* b, int64_t d) {
  double s = 0;
  for (int64_t j = 0; j < d; ++j) s += (double{a[j]} - b[j]) * (a[j] - b[j]);
  return s;
}

TEST(SyntheticTest, PointsFormTightClusters) {
  // With a tiny spread every point lies near one of `clusters` centres: greedy grouping at a
  // radius far above the spread and far below the centre spacing finds at most that many.
  const int clusters = 5;
  const Dataset s = Synthetic(500, 50, 8, clusters, 7, /*spread=*/0.01f);
  std::vector<const float*> reps;
  for (int64_t i = 0; i < s.base.rows; ++i) {
    bool near = false;
    for (const float* r : reps) near = near || Dist2(r, s.base.row(i), 8) < 0.04;
    if (!near) reps.push_back(s.base.row(i));
  }
  EXPECT_GT(reps.size(), 1u);
  EXPECT_LE(reps.size(), static_cast<size_t>(clusters));
  std::set<std::vector<float>> base_rows;
  for (int64_t i = 0; i < s.base.rows; ++i) {
    base_rows.insert(std::vector<float>(s.base.row(i), s.base.row(i) + 8));
  }
  for (int64_t i = 0; i < s.queries.rows; ++i) {
    bool near = false;
    for (const float* r : reps) near = near || Dist2(r, s.queries.row(i), 8) < 0.04;
    EXPECT_TRUE(near) << "query " << i << " is not in a cluster";
    EXPECT_EQ(base_rows.count(std::vector<float>(s.queries.row(i), s.queries.row(i) + 8)), 0u)
        << "query " << i << " copies a base row";
  }
}

TEST(LoadDatasetTest, SyntheticSpec) {
  StatusOr<Dataset> d = LoadDataset("synthetic:n=300,nq=7,d=5,clusters=3,seed=9,spread=0.5");
  ASSERT_TRUE(d.ok()) << d.status().ToString();
  EXPECT_EQ(d->base.rows, 300);
  EXPECT_EQ(d->queries.rows, 7);
  EXPECT_EQ(d->base.cols, 5);
  EXPECT_EQ(d->base.data, Synthetic(300, 7, 5, 3, 9, 0.5f).base.data);
  EXPECT_EQ(d->metric, Metric::kL2);

  StatusOr<Dataset> defaults = LoadDataset("synthetic:n=1000,d=4");
  ASSERT_TRUE(defaults.ok()) << defaults.status().ToString();
  EXPECT_EQ(defaults->queries.rows, 1000);
  EXPECT_EQ(defaults->base.data, Synthetic(1000, 1000, 4, 100, 1, 0.3f).base.data);
}

TEST(LoadDatasetTest, BadSpecsRefused) {
  for (const char* spec :
       {"synthetic:n=10,bogus=1", "synthetic:n=abc", "synthetic:n=10x", "synthetic:d=0",
        "synthetic:n=-5", "synthetic:n", "synthetic:d=200000", "synthetic:n=10,clusters=11",
        "synthetic:spread=nan", "synthetic:n=99999999999999,d=128", "dataset.csv", ""}) {
    StatusOr<Dataset> d = LoadDataset(spec);
    EXPECT_FALSE(d.ok()) << spec;
    EXPECT_EQ(d.status().code(), StatusCode::kInvalidArgument) << spec;
  }
}

TEST(LoadDatasetTest, SiftLayout) {
  const std::string prefix = TempPath("tiny");
  const FloatMatrix base = Matrix(4, 2, {0, 0, 1, 0, 2, 0, 3, 0});
  const FloatMatrix queries = Matrix(2, 2, {0.1f, 0, 2.9f, 0});
  ASSERT_TRUE(WriteFvecs(prefix + "_base.fvecs", base).ok());
  ASSERT_TRUE(WriteFvecs(prefix + "_query.fvecs", queries).ok());
  std::filesystem::remove(prefix + "_groundtruth.ivecs");

  StatusOr<Dataset> d = LoadDataset(prefix + "_base.fvecs");
  ASSERT_TRUE(d.ok()) << d.status().ToString();
  EXPECT_EQ(d->name, "tiny");
  EXPECT_EQ(d->base.data, base.data);
  EXPECT_EQ(d->queries.data, queries.data);
  EXPECT_TRUE(d->neighbors.empty());

  ASSERT_TRUE(WriteIvecs(prefix + "_groundtruth.ivecs", {0, 1, 3, 2}, 2).ok());
  d = LoadDataset(prefix + "_base.fvecs");
  ASSERT_TRUE(d.ok()) << d.status().ToString();
  EXPECT_EQ(d->gt_k, 2);
  EXPECT_EQ(d->neighbors, (std::vector<int32_t>{0, 1, 3, 2}));

  // Ground truth that does not fit the base or the queries is refused.
  ASSERT_TRUE(WriteIvecs(prefix + "_groundtruth.ivecs", {0, 1, 3, 4}, 2).ok());
  EXPECT_FALSE(LoadDataset(prefix + "_base.fvecs").ok());
  ASSERT_TRUE(WriteIvecs(prefix + "_groundtruth.ivecs", {0, 1}, 2).ok());
  EXPECT_FALSE(LoadDataset(prefix + "_base.fvecs").ok());
  std::filesystem::remove(prefix + "_groundtruth.ivecs");

  // Queries of another dimension are refused; missing queries are reported.
  ASSERT_TRUE(WriteFvecs(prefix + "_query.fvecs", Matrix(1, 3, {1, 2, 3})).ok());
  EXPECT_FALSE(LoadDataset(prefix + "_base.fvecs").ok());
  std::filesystem::remove(prefix + "_query.fvecs");
  EXPECT_EQ(LoadDataset(prefix + "_base.fvecs").status().code(), StatusCode::kNotFound);
}

TEST(LoadDatasetTest, BvecsLayout) {
  const std::string prefix = TempPath("bytes");
  std::vector<char> base, query;
  for (int row = 0; row < 3; ++row) {
    AppendInt32(base, 2);
    base.push_back(static_cast<char>(row));
    base.push_back(static_cast<char>(200));
  }
  AppendInt32(query, 2);
  query.push_back(1);
  query.push_back(2);
  WriteBytes(prefix + "_base.bvecs", base);
  WriteBytes(prefix + "_query.bvecs", query);
  StatusOr<Dataset> d = LoadDataset(prefix + "_base.bvecs");
  ASSERT_TRUE(d.ok()) << d.status().ToString();
  EXPECT_EQ(d->base.data, (std::vector<float>{0, 200, 1, 200, 2, 200}));
  EXPECT_EQ(d->queries.data, (std::vector<float>{1, 2}));
}

}  // namespace
}  // namespace vecgpu::bench
