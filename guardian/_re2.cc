// guardian._re2: the few calls of the RE2 library that rule patterns need (guardian/patterns.py),
// built against the system's libre2 where the Python binding google-re2 is not packaged (Debian:
// the package build sets GUARDIAN_RE2_BINDING=1, setup.py). Nothing more than a rule asks:
//
//   compile(pattern: str) -> Regexp      ValueError(RE2's message) when RE2 refuses it
//   Regexp.programsize -> int            compiled size, which bounds a match's cost
//   Regexp.search(data: bytes) -> bool   a match anywhere in data (unanchored)
//   Regexp.fullmatch(data: bytes) -> bool
//
// The options are the ones guardian gives google-re2: UTF-8, no captures (a yes/no answer runs on
// the DFA), no logging of rejected patterns (the caller reports them as a sentence). Matching
// releases the interpreter lock: its time is linear in the text, and a kill hook's thread may run
// meanwhile.

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <new>

#include <re2/re2.h>

namespace {

struct RegexpObject {
    PyObject_HEAD
    re2::RE2* re;
};

void regexp_dealloc(PyObject* self) {
    delete reinterpret_cast<RegexpObject*>(self)->re;
    Py_TYPE(self)->tp_free(self);
}

// Whether the bytes-like argument matches (True/False); NULL with TypeError set when it is
// not bytes-like.
template <bool Full>
PyObject* regexp_match(PyObject* self, PyObject* arg) {
    Py_buffer view;
    if (PyObject_GetBuffer(arg, &view, PyBUF_SIMPLE) != 0) {
        return nullptr;
    }
    const re2::RE2& re = *reinterpret_cast<RegexpObject*>(self)->re;
    re2::StringPiece text(static_cast<const char*>(view.buf), static_cast<size_t>(view.len));
    bool matched;
    Py_BEGIN_ALLOW_THREADS
    matched = Full ? re2::RE2::FullMatch(text, re) : re2::RE2::PartialMatch(text, re);
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&view);
    return PyBool_FromLong(matched);
}

PyObject* regexp_programsize(PyObject* self, void*) {
    return PyLong_FromLong(reinterpret_cast<RegexpObject*>(self)->re->ProgramSize());
}

PyMethodDef regexp_methods[] = {
    {"search", regexp_match<false>, METH_O, "search(data: bytes) -> bool: a match anywhere in data"},
    {"fullmatch", regexp_match<true>, METH_O, "fullmatch(data: bytes) -> bool: data matches whole"},
    {nullptr, nullptr, 0, nullptr},
};

PyGetSetDef regexp_getset[] = {
    {"programsize", regexp_programsize, nullptr, "RE2's compiled size of the pattern", nullptr},
    {nullptr, nullptr, nullptr, nullptr, nullptr},
};

PyTypeObject RegexpType = {
    PyVarObject_HEAD_INIT(nullptr, 0)
};

PyObject* compile(PyObject*, PyObject* arg) {
    if (!PyUnicode_Check(arg)) {
        PyErr_Format(PyExc_TypeError, "a pattern is text (str), not %.100s", Py_TYPE(arg)->tp_name);
        return nullptr;
    }
    Py_ssize_t size;
    const char* utf8 = PyUnicode_AsUTF8AndSize(arg, &size);  // fails on a lone surrogate
    if (utf8 == nullptr) {
        return nullptr;
    }
    re2::RE2::Options options;
    options.set_encoding(re2::RE2::Options::EncodingUTF8);
    options.set_log_errors(false);
    options.set_never_capture(true);
    re2::RE2* re = new (std::nothrow) re2::RE2(re2::StringPiece(utf8, static_cast<size_t>(size)), options);
    if (re == nullptr) {
        return PyErr_NoMemory();
    }
    if (!re->ok()) {
        PyObject* reason = PyUnicode_DecodeUTF8(re->error().data(), static_cast<Py_ssize_t>(re->error().size()),
                                                "replace");
        delete re;
        if (reason != nullptr) {
            PyErr_SetObject(PyExc_ValueError, reason);
            Py_DECREF(reason);
        }
        return nullptr;
    }
    RegexpObject* self = PyObject_New(RegexpObject, &RegexpType);
    if (self == nullptr) {
        delete re;
        return nullptr;
    }
    self->re = re;
    return reinterpret_cast<PyObject*>(self);
}

PyMethodDef module_methods[] = {
    {"compile", compile, METH_O, "compile(pattern: str) -> Regexp; ValueError with RE2's reason"},
    {nullptr, nullptr, 0, nullptr},
};

PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "guardian._re2", "RE2 matching for guardian's rule patterns (libre2).", -1,
    module_methods,
};

}  // namespace

PyMODINIT_FUNC PyInit__re2(void) {
    RegexpType.tp_name = "guardian._re2.Regexp";
    RegexpType.tp_basicsize = sizeof(RegexpObject);
    RegexpType.tp_flags = Py_TPFLAGS_DEFAULT;
    RegexpType.tp_doc = "A compiled RE2 pattern (guardian._re2.compile)";
    RegexpType.tp_dealloc = regexp_dealloc;
    RegexpType.tp_methods = regexp_methods;
    RegexpType.tp_getset = regexp_getset;
    if (PyType_Ready(&RegexpType) < 0) {
        return nullptr;
    }
    return PyModule_Create(&module);
}
