// Python module defect_det._C. Importing it loads this library, whose static initialisers
// register the torch.ops.defect_det operators (sinkhorn/sinkhorn_op.cpp). Plain CPython API, no
// pybind11, to keep the build light.
#include <Python.h>

static struct PyModuleDef defect_det_c_module = {
    PyModuleDef_HEAD_INIT, "_C",
    "Compiled kernels of defect_det (torch.ops.defect_det.*).", -1, nullptr};

PyMODINIT_FUNC PyInit__C(void) {
  PyObject* m = PyModule_Create(&defect_det_c_module);
  if (m == nullptr) return nullptr;
#ifdef WITH_CUDA
  PyModule_AddIntConstant(m, "WITH_CUDA", 1);
#else
  PyModule_AddIntConstant(m, "WITH_CUDA", 0);
#endif
  return m;
}
