//! `wsgi.file_wrapper`: how an app hands a file to the server
//! (`return environ['wsgi.file_wrapper'](open(path, 'rb'))`).
//!
//! PEP 3333 lets a server send such a file with a faster platform facility;
//! this one reads it in blocks like any iterable, which is what the spec
//! requires of every server, and closes the file when the response is over.

use pyo3::prelude::*;
use pyo3::types::PyBytes;

#[pyclass(module = "wsgi_bridge", name = "FileWrapper")]
pub struct FileWrapper {
    filelike: Py<PyAny>,
    block_size: usize,
}

#[pymethods]
impl FileWrapper {
    #[new]
    #[pyo3(signature = (filelike, block_size = 8192))]
    fn new(filelike: Py<PyAny>, block_size: usize) -> FileWrapper {
        FileWrapper {
            filelike,
            block_size: block_size.max(1),
        }
    }

    fn __iter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    fn __next__<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyAny>>> {
        let block = self
            .filelike
            .bind(py)
            .call_method1("read", (self.block_size,))?;
        let empty = match block.cast::<PyBytes>() {
            Ok(b) => b.as_bytes().is_empty(),
            Err(_) => block.len()? == 0,
        };
        Ok((!empty).then_some(block))
    }

    /// Closes the file, if it can be closed (PEP 3333: the wrapper's
    /// `close()` calls the file-like object's).
    fn close(&self, py: Python<'_>) -> PyResult<()> {
        let filelike = self.filelike.bind(py);
        if filelike.hasattr("close")? {
            filelike.call_method0("close")?;
        }
        Ok(())
    }
}
