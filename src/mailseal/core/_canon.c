/* Relaxed body canonicalization (RFC 6376 section 3.4.4 a+b) over complete lines.
 *
 * The same transformation as mailseal.core.canonicalization.relaxed_lines_py,
 * in one pass: every run of SP/HTAB becomes one SP, and a run that ends a line
 * (is followed by CRLF) is removed. Lines are delimited by CRLF only; a bare CR
 * or LF is ordinary content. The Python version stays the reference and the
 * test suite checks both agree on arbitrary bytes.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#if defined(__SSE2__)
#include <emmintrin.h>
#endif

/* The byte at in[i] starts a run that relaxed canonicalization rewrites or removes:
 * any HTAB, or an SP followed by SP, HTAB or CR. A lone SP before other content
 * is copied unchanged, as is every other byte. */
static Py_ssize_t
relaxed_run(const unsigned char *in, Py_ssize_t n, Py_ssize_t i, unsigned char *out, Py_ssize_t *o)
{
    Py_ssize_t j = i + 1;
    while (j < n && (in[j] == ' ' || in[j] == '\t')) {
        j++;
    }
    if (!(j + 1 < n && in[j] == '\r' && in[j + 1] == '\n')) {
        out[(*o)++] = ' ';
    }
    return j;
}

static PyObject *
relaxed_lines(PyObject *Py_UNUSED(module), PyObject *arg)
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
#if defined(__SSE2__)
    /* 16 bytes at a time: a block with nothing to rewrite (no HTAB, no SP followed
     * by SP/HTAB/CR) is copied whole; otherwise copy up to the first such byte and
     * let relaxed_run() handle the run. Writing a whole block at out+o is safe:
     * o <= i always, and i + 17 <= n. Typical text is mostly such blocks. */
    const __m128i sp = _mm_set1_epi8(' ');
    const __m128i tab = _mm_set1_epi8('\t');
    const __m128i cr = _mm_set1_epi8('\r');
    while (i + 17 <= n) {
        __m128i here = _mm_loadu_si128((const __m128i *)(in + i));
        __m128i next = _mm_loadu_si128((const __m128i *)(in + i + 1));
        __m128i next_ws = _mm_or_si128(
            _mm_or_si128(_mm_cmpeq_epi8(next, sp), _mm_cmpeq_epi8(next, tab)), _mm_cmpeq_epi8(next, cr));
        __m128i starts = _mm_or_si128(
            _mm_cmpeq_epi8(here, tab), _mm_and_si128(_mm_cmpeq_epi8(here, sp), next_ws));
        unsigned int mask = (unsigned int)_mm_movemask_epi8(starts);
        _mm_storeu_si128((__m128i *)(out + o), here);
        if (mask == 0) {
            o += 16;
            i += 16;
            continue;
        }
        unsigned int k = (unsigned int)__builtin_ctz(mask);
        o += k;
        i = relaxed_run(in, n, i + k, out, &o);
    }
#endif
    while (i < n) {
        unsigned char c = in[i];
        if (c == ' ' || c == '\t') {
            i = relaxed_run(in, n, i, out, &o);
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

/* Relaxed header canonicalization (RFC 6376 section 3.4.2) of one raw field:
 * lower-case the name and drop WSP before the colon, unfold (remove every CRLF),
 * collapse SP/HTAB runs to one SP, drop WSP at both ends of the value, end with
 * CRLF. Mirrors mailseal.core.canonicalization.relaxed_header_py. */
static PyObject *
relaxed_header(PyObject *Py_UNUSED(module), PyObject *arg)
{
    Py_buffer view;
    if (PyObject_GetBuffer(arg, &view, PyBUF_SIMPLE) < 0) {
        return NULL;
    }
    const unsigned char *in = (const unsigned char *)view.buf;
    Py_ssize_t n = view.len;
    const unsigned char *colon_ptr = memchr(in, ':', (size_t)n);
    if (colon_ptr == NULL) {
        PyBuffer_Release(&view);
        PyErr_SetString(PyExc_ValueError, "header field without a colon");
        return NULL;
    }
    Py_ssize_t colon = colon_ptr - in;
    PyObject *result = PyBytes_FromStringAndSize(NULL, n + 3);
    if (result == NULL) {
        PyBuffer_Release(&view);
        return NULL;
    }
    unsigned char *out = (unsigned char *)PyBytes_AS_STRING(result);
    Py_ssize_t o = 0;
    Py_ssize_t name_end = colon;
    while (name_end > 0 && (in[name_end - 1] == ' ' || in[name_end - 1] == '\t')) {
        name_end--;
    }
    for (Py_ssize_t i = 0; i < name_end; i++) {
        unsigned char c = in[i];
        out[o++] = (c >= 'A' && c <= 'Z') ? (unsigned char)(c + 32) : c;
    }
    out[o++] = ':';
    Py_ssize_t value_start = o;
    Py_ssize_t i = colon + 1;
    while (i < n) {
        unsigned char c = in[i];
        if (c == ' ' || c == '\t' || (c == '\r' && i + 1 < n && in[i + 1] == '\n')) {
            int space = 0;
            while (i < n) {
                if (in[i] == ' ' || in[i] == '\t') {
                    space = 1;
                    i++;
                } else if (in[i] == '\r' && i + 1 < n && in[i + 1] == '\n') {
                    i += 2;
                } else {
                    break;
                }
            }
            if (space && o > value_start && i < n) {
                out[o++] = ' ';
            }
        } else {
            out[o++] = c;
            i++;
        }
    }
    out[o++] = '\r';
    out[o++] = '\n';
    PyBuffer_Release(&view);
    if (_PyBytes_Resize(&result, o) < 0) {
        return NULL;
    }
    return result;
}

/* RFC 6376 3.2 tag-list, the fast path of mailseal.core.taglist.parse_tag_list:
 * a dict of name -> value (FWS around values removed, folding CRLFs removed) in
 * order, or None for anything the Python version must look at -- non-ASCII text,
 * and every input it rejects (control characters, a part without '=', a bad
 * name, a bare CR or LF, a duplicate name). None is never an answer by itself:
 * the caller then runs the Python version, which gives the result or the
 * precise error. */
static int
is_fws(unsigned char c)
{
    return c == ' ' || c == '\t' || c == '\r' || c == '\n';
}

static PyObject *
tag_list(PyObject *Py_UNUSED(module), PyObject *arg)
{
    if (!PyUnicode_Check(arg)) {
        PyErr_SetString(PyExc_TypeError, "tag_list() takes a str");
        return NULL;
    }
    if (!PyUnicode_IS_ASCII(arg)) {
        Py_RETURN_NONE;
    }
    const unsigned char *s = PyUnicode_1BYTE_DATA(arg);
    Py_ssize_t n = PyUnicode_GET_LENGTH(arg);
    int folded = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        unsigned char c = s[i];
        if ((c < 0x20 && c != '\t' && c != '\n' && c != '\r') || c == 0x7f) {
            Py_RETURN_NONE;
        }
        if (c == '\r' || c == '\n') {
            folded = 1;
        }
    }
    PyObject *tags = PyDict_New();
    if (tags == NULL) {
        return NULL;
    }
    char small[256];
    Py_ssize_t start = 0;
    while (start <= n) {
        const unsigned char *semi = memchr(s + start, ';', (size_t)(n - start));
        Py_ssize_t end = semi ? semi - s : n;
        const unsigned char *eqp = memchr(s + start, '=', (size_t)(end - start));
        if (eqp == NULL) {
            Py_ssize_t k = start;
            while (k < end && is_fws(s[k])) {
                k++;
            }
            if (end == n && k == end) {
                break; /* the optional ";" at the end (or nothing at all) */
            }
            goto fallback;
        }
        Py_ssize_t eq = eqp - s;
        Py_ssize_t a = start, b = eq;
        while (a < b && is_fws(s[a])) {
            a++;
        }
        while (b > a && is_fws(s[b - 1])) {
            b--;
        }
        if (a == b || !Py_ISALPHA(s[a])) {
            goto fallback;
        }
        for (Py_ssize_t k = a; k < b; k++) {
            if (!Py_ISALNUM(s[k]) && s[k] != '_') {
                goto fallback;
            }
        }
        Py_ssize_t va = eq + 1, vb = end;
        while (va < vb && is_fws(s[va])) {
            va++;
        }
        while (vb > va && is_fws(s[vb - 1])) {
            vb--;
        }
        PyObject *name = PyUnicode_FromStringAndSize((const char *)s + a, b - a);
        if (name == NULL) {
            Py_DECREF(tags);
            return NULL;
        }
        int seen = PyDict_Contains(tags, name);
        if (seen != 0) {
            Py_DECREF(name);
            if (seen < 0) {
                Py_DECREF(tags);
                return NULL;
            }
            goto fallback;
        }
        PyObject *value;
        if (!folded || (memchr(s + va, '\r', (size_t)(vb - va)) == NULL
                        && memchr(s + va, '\n', (size_t)(vb - va)) == NULL)) {
            value = PyUnicode_FromStringAndSize((const char *)s + va, vb - va);
        } else {
            /* Unfold: each CRLF must be followed by SP or HTAB and goes; any other CR or LF
             * is for the Python version to reject. */
            char *buffer = vb - va <= (Py_ssize_t)sizeof(small) ? small : PyMem_Malloc((size_t)(vb - va));
            if (buffer == NULL) {
                Py_DECREF(name);
                Py_DECREF(tags);
                return PyErr_NoMemory();
            }
            Py_ssize_t o = 0;
            int bad = 0;
            for (Py_ssize_t k = va; k < vb; k++) {
                unsigned char c = s[k];
                if (c == '\r') {
                    if (k + 2 < vb && s[k + 1] == '\n' && (s[k + 2] == ' ' || s[k + 2] == '\t')) {
                        k++; /* drop CR LF; the WSP is copied next */
                        continue;
                    }
                    bad = 1;
                    break;
                }
                if (c == '\n') {
                    bad = 1;
                    break;
                }
                buffer[o++] = (char)c;
            }
            value = bad ? NULL : PyUnicode_FromStringAndSize(buffer, o);
            if (buffer != small) {
                PyMem_Free(buffer);
            }
            if (bad) {
                Py_DECREF(name);
                goto fallback;
            }
        }
        if (value == NULL) {
            Py_DECREF(name);
            Py_DECREF(tags);
            return NULL;
        }
        int failed = PyDict_SetItem(tags, name, value);
        Py_DECREF(name);
        Py_DECREF(value);
        if (failed < 0) {
            Py_DECREF(tags);
            return NULL;
        }
        if (end == n) {
            break;
        }
        start = end + 1;
    }
    return tags;
fallback:
    Py_DECREF(tags);
    Py_RETURN_NONE;
}

static PyMethodDef canon_methods[] = {
    {"relaxed_header", relaxed_header, METH_O,
     "Relaxed header canonicalization of one raw field (RFC 6376 3.4.2)."},
    {"tag_list", tag_list, METH_O,
     "Fast path of an RFC 6376 3.2 tag-list: a dict in order, or None to let the Python version decide."},
    {"relaxed_lines", relaxed_lines, METH_O,
     "Collapse SP/HTAB runs to one SP and drop them before CRLF (RFC 6376 3.4.4)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef canon_module = {
    PyModuleDef_HEAD_INIT, "mailseal.core._canon",
    "C speedups: relaxed canonicalization and tag-list parsing.", -1, canon_methods,
};

PyMODINIT_FUNC
PyInit__canon(void)
{
    return PyModule_Create(&canon_module);
}
