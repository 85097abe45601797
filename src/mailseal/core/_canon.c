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

/* The header block split into fields (mailseal.core.message.parse_header_block_py).
 *
 * The header ends at the first empty line (CRLF CRLF); a message without one is
 * all header. A field ends at every CRLF not followed by SP or HTAB. Its name is
 * what precedes the first colon, unless a CRLF comes before that colon (then the
 * field is nameless and can never be selected). Fields are made as instances of
 * ``cls`` (HeaderField) with name, raw and the lower-cased key set directly: that
 * object creation was most of the cost of the Python version. */
static PyObject *str_name, *str_raw, *str_key, *str_lower;

static PyObject *
make_field(PyTypeObject *cls, const char *s, Py_ssize_t a, Py_ssize_t text_end, Py_ssize_t raw_end)
{
    PyObject *name = NULL, *key = NULL, *raw = NULL, *field = NULL;
    const char *colon = memchr(s + a, ':', (size_t)(text_end - a));
    Py_ssize_t name_end = -1;
    if (colon != NULL) {
        name_end = colon - s;
        for (Py_ssize_t i = a; i + 2 <= name_end; i++) {
            if (s[i] == '\r' && s[i + 1] == '\n') {
                name_end = -1; /* the colon is on a continuation line: no name */
                break;
            }
        }
    }
    if (name_end < 0) {
        name = PyUnicode_New(0, 0);
        if (name == NULL) {
            return NULL;
        }
        Py_INCREF(name);
        key = name;
    } else {
        while (name_end > a && (s[name_end - 1] == ' ' || s[name_end - 1] == '\t')) {
            name_end--;
        }
        int ascii = 1, upper = 0;
        for (Py_ssize_t i = a; i < name_end; i++) {
            unsigned char c = (unsigned char)s[i];
            if (c >= 0x80) {
                ascii = 0;
                break;
            }
            if (c >= 'A' && c <= 'Z') {
                upper = 1;
            }
        }
        if (ascii) { /* the usual case: a plain copy, no decoder */
            name = PyUnicode_New(name_end - a, 127);
            if (name != NULL) {
                memcpy(PyUnicode_1BYTE_DATA(name), s + a, (size_t)(name_end - a));
            }
        } else {
            name = PyUnicode_DecodeUTF8(s + a, name_end - a, "replace");
        }
        if (name == NULL) {
            return NULL;
        }
        if (!ascii) {
            key = PyObject_CallMethodNoArgs(name, str_lower);
        } else if (!upper) {
            Py_INCREF(name);
            key = name;
        } else {
            key = PyUnicode_New(name_end - a, 127);
            if (key != NULL) {
                Py_UCS1 *out = PyUnicode_1BYTE_DATA(key);
                for (Py_ssize_t i = a; i < name_end; i++) {
                    unsigned char c = (unsigned char)s[i];
                    out[i - a] = (Py_UCS1)(c >= 'A' && c <= 'Z' ? c + 32 : c);
                }
            }
        }
        if (key == NULL) {
            Py_DECREF(name);
            return NULL;
        }
    }
    raw = PyBytes_FromStringAndSize(s + a, raw_end - a);
    if (raw == NULL) {
        goto done;
    }
    field = cls->tp_alloc(cls, 0);
    if (field == NULL) {
        goto done;
    }
    if (PyObject_SetAttr(field, str_name, name) < 0 || PyObject_SetAttr(field, str_raw, raw) < 0
        || PyObject_SetAttr(field, str_key, key) < 0) {
        Py_CLEAR(field);
    }
done:
    Py_XDECREF(name);
    Py_XDECREF(key);
    Py_XDECREF(raw);
    return field;
}

static PyObject *
header_fields(PyObject *Py_UNUSED(module), PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2 || !PyType_Check(args[1])) {
        PyErr_SetString(PyExc_TypeError, "header_fields(data, cls) takes bytes and a class");
        return NULL;
    }
    PyTypeObject *cls = (PyTypeObject *)args[1];
    Py_buffer view;
    if (PyObject_GetBuffer(args[0], &view, PyBUF_SIMPLE) < 0) {
        return NULL;
    }
    const char *s = (const char *)view.buf;
    Py_ssize_t n = view.len;
    PyObject *fields = NULL, *result = NULL;
    if (n >= 2 && s[0] == '\r' && s[1] == '\n') {
        fields = PyTuple_New(0);
        result = fields == NULL ? NULL : Py_BuildValue("(Nn)", fields, (Py_ssize_t)2);
        PyBuffer_Release(&view);
        return result;
    }
    Py_ssize_t block = n, offset = n; /* the header block s[:block] and where the body starts */
    for (const char *p = s; (p = memchr(p, '\r', (size_t)(s + n - p))) != NULL; p++) {
        if (p + 4 <= s + n && p[1] == '\n' && p[2] == '\r' && p[3] == '\n') {
            block = p - s + 2;
            offset = p - s + 4;
            break;
        }
    }
    PyObject *list = PyList_New(0);
    if (list == NULL) {
        goto error;
    }
    Py_ssize_t start = 0;
    for (Py_ssize_t i = 0; i + 1 < block;) {
        const char *cr = memchr(s + i, '\r', (size_t)(block - 1 - i));
        if (cr == NULL) {
            break;
        }
        i = cr - s;
        if (s[i + 1] == '\n' && (i + 2 >= block || (s[i + 2] != ' ' && s[i + 2] != '\t'))) {
            PyObject *field = make_field(cls, s, start, i, i + 2);
            if (field == NULL || PyList_Append(list, field) < 0) {
                Py_XDECREF(field);
                goto error;
            }
            Py_DECREF(field);
            start = i + 2;
            i += 2;
        } else {
            i++;
        }
    }
    if (start < block) { /* a last field without a CRLF */
        PyObject *field = make_field(cls, s, start, block, block);
        if (field == NULL || PyList_Append(list, field) < 0) {
            Py_XDECREF(field);
            goto error;
        }
        Py_DECREF(field);
    }
    fields = PyList_AsTuple(list);
    Py_CLEAR(list);
    if (fields != NULL) {
        result = Py_BuildValue("(Nn)", fields, offset);
    }
    PyBuffer_Release(&view);
    return result;
error:
    Py_XDECREF(list);
    PyBuffer_Release(&view);
    return NULL;
}

static int
is_fws_byte(char c)
{
    return c == ' ' || c == '\t' || c == '\r' || c == '\n';
}

/* The DKIM-Signature value with b='s value removed (RFC 6376 3.7), everything else
 * byte-exact: the first ";"-separated piece whose name (before its first "=", FWS
 * stripped) is "b" keeps its name and "=". The same as
 * mailseal.core.signature.without_b_value_py. */
static PyObject *
without_b_value(PyObject *Py_UNUSED(module), PyObject *arg)
{
    if (!PyBytes_Check(arg)) {
        PyErr_SetString(PyExc_TypeError, "without_b_value() takes bytes");
        return NULL;
    }
    const char *s = PyBytes_AS_STRING(arg);
    Py_ssize_t n = PyBytes_GET_SIZE(arg);
    Py_ssize_t start = 0;
    while (start <= n) {
        const char *semi = memchr(s + start, ';', (size_t)(n - start));
        Py_ssize_t end = semi ? semi - s : n;
        const char *eqp = memchr(s + start, '=', (size_t)(end - start));
        if (eqp != NULL) {
            Py_ssize_t a = start, b = eqp - s;
            while (a < b && is_fws_byte(s[a])) {
                a++;
            }
            while (b > a && is_fws_byte(s[b - 1])) {
                b--;
            }
            if (b - a == 1 && s[a] == 'b') {
                Py_ssize_t keep = eqp - s + 1;
                PyObject *out = PyBytes_FromStringAndSize(NULL, keep + (n - end));
                if (out == NULL) {
                    return NULL;
                }
                memcpy(PyBytes_AS_STRING(out), s, (size_t)keep);
                memcpy(PyBytes_AS_STRING(out) + keep, s + end, (size_t)(n - end));
                return out;
            }
        }
        start = end + 1;
    }
    Py_INCREF(arg);
    return arg;
}

static PyMethodDef canon_methods[] = {
    {"relaxed_header", relaxed_header, METH_O,
     "Relaxed header canonicalization of one raw field (RFC 6376 3.4.2)."},
    {"tag_list", tag_list, METH_O,
     "Fast path of an RFC 6376 3.2 tag-list: a dict in order, or None to let the Python version decide."},
    {"relaxed_lines", relaxed_lines, METH_O,
     "Collapse SP/HTAB runs to one SP and drop them before CRLF (RFC 6376 3.4.4)."},
    {"without_b_value", without_b_value, METH_O,
     "The DKIM-Signature value with the b= value removed, everything else byte-exact (RFC 6376 3.7)."},
    {"header_fields", (PyCFunction)(void (*)(void))header_fields, METH_FASTCALL,
     "The header block as (fields, body offset); fields made as instances of cls (HeaderField)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef canon_module = {
    PyModuleDef_HEAD_INIT, "mailseal.core._canon",
    "C speedups: relaxed canonicalization, tag-list parsing and the header-block split.", -1, canon_methods,
};

PyMODINIT_FUNC
PyInit__canon(void)
{
    str_name = PyUnicode_InternFromString("name");
    str_raw = PyUnicode_InternFromString("raw");
    str_key = PyUnicode_InternFromString("key");
    str_lower = PyUnicode_InternFromString("lower");
    if (str_name == NULL || str_raw == NULL || str_key == NULL || str_lower == NULL) {
        return NULL;
    }
    return PyModule_Create(&canon_module);
}
