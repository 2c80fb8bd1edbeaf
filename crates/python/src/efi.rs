//! The UEFI variable store for Python: `EfiVars` (upstream's class, over
//! [`ntd_core::machine::qemu::EfiVars`]) and the codec functions `ntd.efi`'s `EfiVariable`
//! calls. Variables cross as `ntd.efi.EfiVariable` objects: read by their upstream attribute
//! names, made by `EfiVariable._from_store(fields)` (see `python-shim/ntd/efi.py` for why the
//! objects are Python and the bytes Rust).

use std::path::PathBuf;

use ntd_core::efi::{Guid, UefiTime, Variable, VariableHeader};
use ntd_core::machine::qemu::EfiVars as CoreEfiVars;
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyBytes, PyDict, PyType};

use crate::errors::machine_to_pyerr;
use crate::machine::qemu::QemuMachine;
use crate::runtime::block_on;

/// `ntd.efi.EfiVariable`, looked up once.
fn variable_class(py: Python<'_>) -> PyResult<Bound<'_, PyType>> {
    static CLASS: PyOnceLock<Py<PyType>> = PyOnceLock::new();
    CLASS
        .get_or_try_init(py, || {
            Ok::<_, PyErr>(py.import("ntd.efi")?.getattr("EfiVariable")?.cast_into::<PyType>()?.unbind())
        })
        .map(|class| class.bind(py).clone())
}

fn time_from_py(time: &Bound<'_, PyAny>) -> PyResult<UefiTime> {
    Ok(UefiTime {
        year: time.getattr("year")?.extract()?,
        month: time.getattr("month")?.extract()?,
        day: time.getattr("day")?.extract()?,
        hour: time.getattr("hour")?.extract()?,
        minute: time.getattr("minute")?.extract()?,
        second: time.getattr("second")?.extract()?,
        pad1: time.getattr("pad1")?.extract()?,
        nanosecond: time.getattr("nanosecond")?.extract()?,
        time_zone: time.getattr("timezone")?.extract()?,
        daylight: time.getattr("daylight")?.extract()?,
        pad2: time.getattr("pad2")?.extract()?,
    })
}

/// A Python `EfiVariable` (or anything with its attributes) as a core variable. The sizes
/// come from `name` and `data`; `magic` is always written as `0x55AA`.
pub fn variable_from_py(variable: &Bound<'_, PyAny>) -> PyResult<Variable> {
    let vendor: [u8; 16] = variable.getattr("vendorUUID")?.getattr("bytes")?.extract()?;
    Ok(Variable {
        state: variable.getattr("state")?.extract()?,
        reserved: variable.getattr("reserved1")?.extract()?,
        attributes: variable.getattr("flags")?.extract()?,
        monotonic_count: variable.getattr("monotonicCount")?.extract()?,
        timestamp: time_from_py(&variable.getattr("timestamp")?)?,
        public_key_index: variable.getattr("pubKeyIdx")?.extract()?,
        vendor: Guid::from_bytes(vendor),
        name: variable.getattr("name")?.extract()?,
        data: variable.getattr("data")?.extract()?,
    })
}

/// A core variable's fields under upstream's attribute names, for `EfiVariable._from_store`.
fn fields<'py>(py: Python<'py>, variable: &Variable) -> PyResult<Bound<'py, PyDict>> {
    let time = &variable.timestamp;
    let timestamp = PyDict::new(py);
    timestamp.set_item("year", time.year)?;
    timestamp.set_item("month", time.month)?;
    timestamp.set_item("day", time.day)?;
    timestamp.set_item("hour", time.hour)?;
    timestamp.set_item("minute", time.minute)?;
    timestamp.set_item("second", time.second)?;
    timestamp.set_item("pad1", time.pad1)?;
    timestamp.set_item("nanosecond", time.nanosecond)?;
    timestamp.set_item("timezone", time.time_zone)?;
    timestamp.set_item("daylight", time.daylight)?;
    timestamp.set_item("pad2", time.pad2)?;
    let fields = PyDict::new(py);
    fields.set_item("magic", ntd_core::efi::MAGIC)?;
    fields.set_item("state", variable.state)?;
    fields.set_item("reserved1", variable.reserved)?;
    fields.set_item("flags", variable.attributes)?;
    fields.set_item("monotonicCount", variable.monotonic_count)?;
    fields.set_item("timestamp", timestamp)?;
    fields.set_item("pubKeyIdx", variable.public_key_index)?;
    fields.set_item("nameLen", variable.name.encode_utf16().count() * 2 + 2)?;
    fields.set_item("dataLen", variable.data.len())?;
    fields.set_item("vendorUUID", PyBytes::new(py, variable.vendor.as_bytes()))?;
    fields.set_item("name", &variable.name)?;
    fields.set_item("data", PyBytes::new(py, &variable.data))?;
    Ok(fields)
}

/// A core variable as an `ntd.efi.EfiVariable`, made as upstream's `deserialize` makes one.
pub fn variable_to_py<'py>(py: Python<'py>, variable: &Variable) -> PyResult<Bound<'py, PyAny>> {
    variable_class(py)?.call_method1("_from_store", (fields(py, variable)?,))
}

/// The variables of a store as Python objects, in order.
pub fn variables_to_py<'py>(py: Python<'py>, variables: &[Variable]) -> PyResult<Vec<Bound<'py, PyAny>>> {
    variables.iter().map(|variable| variable_to_py(py, variable)).collect()
}

/// Python objects as core variables.
pub fn variables_from_py(variables: &[Bound<'_, PyAny>]) -> PyResult<Vec<Variable>> {
    variables.iter().map(variable_from_py).collect()
}

/// `EfiVariable.serialize()`: the variable's bytes.
#[pyfunction]
pub fn efi_encode_variable<'py>(py: Python<'py>, variable: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyBytes>> {
    Ok(PyBytes::new(py, &variable_from_py(variable)?.encode()))
}

/// `EfiVariable.print()`'s text.
#[pyfunction]
pub fn efi_describe_variable(variable: &Bound<'_, PyAny>) -> PyResult<String> {
    Ok(variable_from_py(variable)?.describe())
}

/// `read(n)` from a binary file object, refusing a short read.
fn read_exact(f: &Bound<'_, PyAny>, n: usize) -> PyResult<Vec<u8>> {
    let bytes: Vec<u8> = f.call_method1("read", (n,))?.extract()?;
    if bytes.len() != n {
        return Err(PyValueError::new_err(format!(
            "the store ends inside a variable: {n} bytes wanted, {} read",
            bytes.len()
        )));
    }
    Ok(bytes)
}

/// `EfiVariable.deserialize(f)`'s work: read the variable at `f`'s position and the padding
/// after it (the next 4-byte boundary of the file, as upstream), and return its fields; None
/// at the end of the variables.
#[pyfunction]
pub fn efi_read_variable<'py>(py: Python<'py>, f: &Bound<'py, PyAny>) -> PyResult<Option<Bound<'py, PyDict>>> {
    let header = read_exact(f, VariableHeader::SIZE)?;
    let header: [u8; VariableHeader::SIZE] =
        header.try_into().map_err(|_| PyValueError::new_err("a variable header is 60 bytes"))?;
    let header = VariableHeader::parse(&header).map_err(|e| PyValueError::new_err(e.to_string()))?;
    let Some(header) = header else { return Ok(None) };
    let body = read_exact(f, header.body_size())?;
    let variable = Variable::from_parts(header, &body).map_err(|e| PyValueError::new_err(e.to_string()))?;
    let position: usize = f.call_method0("tell")?.extract()?;
    if !position.is_multiple_of(4) {
        f.call_method1("read", (4 - position % 4,))?;
    }
    fields(py, &variable).map(Some)
}

/// Upstream's `resolveUUID` of a GUID given by its on-disk bytes.
#[pyfunction]
pub fn efi_resolve_guid(guid: [u8; 16]) -> String {
    Guid::from_bytes(guid).resolve()
}

/// The on-disk bytes of the GUID upstream names `name`.
#[pyfunction]
pub fn efi_lookup_guid<'py>(py: Python<'py>, name: &str) -> Option<Bound<'py, PyBytes>> {
    Guid::from_name(name).map(|guid| PyBytes::new(py, guid.as_bytes()))
}

/// Upstream's `EfiVars(state_path, machine)`: a machine's variable store, used only while the
/// machine is off.
#[pyclass(frozen, module = "ntd._native")]
pub struct EfiVars {
    core: CoreEfiVars,
    machine: Py<QemuMachine>,
}

impl EfiVars {
    /// The store of `machine` at `state_path`.
    pub fn of(machine: &Bound<'_, QemuMachine>, state_path: PathBuf) -> PyResult<EfiVars> {
        let core = CoreEfiVars::new(state_path, machine.get().qemu()?);
        Ok(EfiVars { core, machine: machine.clone().unbind() })
    }
}

#[pymethods]
impl EfiVars {
    #[new]
    fn new(state_path: PathBuf, machine: &Bound<'_, QemuMachine>) -> PyResult<EfiVars> {
        EfiVars::of(machine, state_path)
    }

    fn __repr__(&self) -> String {
        format!("<EfiVars {}>", self.core.path().display())
    }

    #[getter]
    fn state_path(&self) -> PathBuf {
        self.core.path().to_owned()
    }

    #[getter]
    fn machine(&self, py: Python<'_>) -> Py<QemuMachine> {
        self.machine.clone_ref(py)
    }

    /// The variables by vendor (its name, else its GUID's text) and name; None without a
    /// store. Raises while the machine runs.
    fn read_content<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyDict>>> {
        let read = block_on(py, self.core.read_content())?.map_err(|e| machine_to_pyerr(py, e))?;
        let Some(variables) = read else { return Ok(None) };
        let content = PyDict::new(py);
        for variable in &variables {
            let vendor = variable.vendor.resolve();
            let names = match content.get_item(&vendor)? {
                Some(names) => names.cast_into::<PyDict>()?,
                None => {
                    let names = PyDict::new(py);
                    content.set_item(&vendor, &names)?;
                    names
                }
            };
            names.set_item(&variable.name, variable_to_py(py, variable)?)?;
        }
        Ok(Some(content))
    }

    /// Write an empty store; raises if one exists or the machine runs.
    fn create_empty(&self, py: Python<'_>) -> PyResult<()> {
        block_on(py, self.core.create_empty())?.map_err(|e| machine_to_pyerr(py, e))
    }

    /// Add or replace variables; raises while the machine runs.
    fn write(&self, py: Python<'_>, add: Vec<Bound<'_, PyAny>>) -> PyResult<()> {
        let add = variables_from_py(&add)?;
        block_on(py, self.core.write(add))?.map_err(|e| machine_to_pyerr(py, e))
    }
}
