/* Relaxed body canonicalization (RFC 6376 section 3.4.4 a+b) over complete lines.
 *
 * The same transformation as mailseal.core.canonicalization._relaxed_lines_py,
 * in one pass: every run of SP/HTAB becomes one SP, and a run that ends a line
 * (is followed by CRLF) is removed. Lines are delimited by CRLF only; a bare CR
 * or LF is ordinary content. The Python version stays the reference and the
 * test suite checks both agree on arbitrary bytes.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

static PyObject *
relaxed_lines(PyObject *module, PyObject *arg)
{
    Py_buffer view;
    if (PyObject_GetBuffer(arg, &view, PyBUF_SIMPLE) < 0) {
        return NULL;
    }
    const unsigned char *in = (const unsigned char *)view.buf;
    Py_ssize_t n = view.len;
    PyObject *result = PyBytes_FromStringAndSize(NULL, n);
    if (result == NULL) {
        PyBuffer_Release(&view);
        return NULL;
    }
    unsigned char *out = (unsigned char *)PyBytes_AS_STRING(result);
    Py_ssize_t o = 0;
    Py_ssize_t i = 0;
    while (i < n) {
        unsigned char c = in[i];
        if (c == ' ' || c == '\t') {
            Py_ssize_t j = i + 1;
            while (j < n && (in[j] == ' ' || in[j] == '\t')) {
                j++;
            }
            if (!(j + 1 < n && in[j] == '\r' && in[j + 1] == '\n')) {
                out[o++] = ' ';
            }
            i = j;
        } else {
            out[o++] = c;
            i++;
        }
    }
    PyBuffer_Release(&view);
    if (o != n && _PyBytes_Resize(&result, o) < 0) {
        return NULL;
    }
    return result;
}

static PyMethodDef canon_methods[] = {
    {"relaxed_lines", relaxed_lines, METH_O,
     "Collapse SP/HTAB runs to one SP and drop them before CRLF (RFC 6376 3.4.4)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef canon_module = {
    PyModuleDef_HEAD_INIT, "mailseal.core._canon",
    "C speedup for relaxed body canonicalization.", -1, canon_methods,
};

PyMODINIT_FUNC
PyInit__canon(void)
{
    return PyModule_Create(&canon_module);
}
