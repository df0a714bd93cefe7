//! Reading NumPy arrays out of pickle files without executing anything.
//!
//! A pickle is a program for a stack machine; unpickling arbitrary files runs arbitrary code.
//! This reader interprets only the opcodes that pickled NumPy arrays, tuples and lists use
//! (protocols 2-4), and only the globals `numpy.core.multiarray._reconstruct` /
//! `numpy._core.multiarray._reconstruct`, `numpy.ndarray` and `numpy.dtype`, applied in the
//! exact shapes NumPy writes them. Anything else is refused with the opcode and its offset.

use std::collections::HashMap;
use std::path::Path;

use crate::error::{DataError, Result};

/// A value the restricted unpickler can produce.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// `None`.
    None,
    /// A boolean.
    Bool(bool),
    /// An integer.
    Int(i64),
    /// A text string.
    Str(String),
    /// A byte string (also Python 2 `str`).
    Bytes(Vec<u8>),
    /// A tuple.
    Tuple(Vec<Value>),
    /// A list.
    List(Vec<Value>),
    /// An allowed global, by name.
    Global(&'static str),
    /// A NumPy dtype under construction or complete, e.g. `"<f4"`.
    Dtype(String),
    /// A NumPy array.
    Array(NdArray),
}

/// A NumPy array read from a pickle.
#[derive(Debug, Clone, PartialEq)]
pub struct NdArray {
    /// Shape.
    pub shape: Vec<usize>,
    /// Dtype code with byte order, e.g. `<f4`, `|u1`, `<i8`.
    pub dtype: String,
    /// Raw little-endian (or byte) data, C order.
    pub data: Vec<u8>,
}

impl NdArray {
    /// Values as f32 (from f4, f8, u1, i8, i4).
    pub fn to_f32(&self) -> Option<Vec<f32>> {
        let d = &self.data;
        Some(match self.dtype.trim_start_matches(['<', '|', '=']) {
            "f4" => d
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
            "f8" => d
                .chunks_exact(8)
                .map(|c| f64::from_le_bytes(c.try_into().ok().unwrap()) as f32)
                .collect(),
            "u1" => d.iter().map(|b| *b as f32).collect(),
            "i8" => d
                .chunks_exact(8)
                .map(|c| i64::from_le_bytes(c.try_into().ok().unwrap()) as f32)
                .collect(),
            "i4" => d
                .chunks_exact(4)
                .map(|c| i32::from_le_bytes(c.try_into().ok().unwrap()) as f32)
                .collect(),
            _ => return None,
        })
    }

    /// Values as i64 (integer dtypes only).
    pub fn to_i64(&self) -> Option<Vec<i64>> {
        let d = &self.data;
        Some(match self.dtype.trim_start_matches(['<', '|', '=']) {
            "u1" => d.iter().map(|b| *b as i64).collect(),
            "i8" => d
                .chunks_exact(8)
                .map(|c| i64::from_le_bytes(c.try_into().ok().unwrap()))
                .collect(),
            "i4" => d
                .chunks_exact(4)
                .map(|c| i32::from_le_bytes(c.try_into().ok().unwrap()) as i64)
                .collect(),
            _ => return None,
        })
    }
}

/// Text from a `str` (protocol 3+) or a Python 2 byte string.
fn text(v: &Value) -> Option<String> {
    match v {
        Value::Str(s) => Some(s.clone()),
        Value::Bytes(b) => Some(String::from_utf8_lossy(b).into_owned()),
        _ => None,
    }
}

fn itemsize(dtype: &str) -> Option<usize> {
    match dtype.trim_start_matches(['<', '|', '=']) {
        "f4" | "i4" => Some(4),
        "f8" | "i8" => Some(8),
        "u1" | "b1" => Some(1),
        _ => None,
    }
}

/// Unpickle `bytes` (already decompressed); `path` names the file in errors.
pub fn unpickle(bytes: &[u8], path: &Path) -> Result<Value> {
    let mut vm = Vm {
        bytes,
        pos: 0,
        path,
        stack: Vec::new(),
        marks: Vec::new(),
        memo: HashMap::new(),
    };
    vm.run()
}

struct Vm<'a> {
    bytes: &'a [u8],
    pos: usize,
    path: &'a Path,
    stack: Vec<Value>,
    marks: Vec<usize>,
    memo: HashMap<u32, Value>,
}

impl Vm<'_> {
    fn refuse(
        &self,
        opcode: impl Into<String>,
        offset: usize,
        why: impl Into<String>,
    ) -> DataError {
        DataError::PickleRefused {
            path: self.path.to_path_buf(),
            opcode: opcode.into(),
            offset,
            why: why.into(),
        }
    }

    fn take(&mut self, n: usize, at: usize) -> Result<&[u8]> {
        if self.pos + n > self.bytes.len() {
            return Err(crate::error::format(
                self.path,
                format!("pickle truncated at byte {at}"),
            ));
        }
        let s = &self.bytes[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    fn u8(&mut self, at: usize) -> Result<u8> {
        Ok(self.take(1, at)?[0])
    }
    fn u16(&mut self, at: usize) -> Result<u16> {
        Ok(u16::from_le_bytes(self.take(2, at)?.try_into().expect("2")))
    }
    fn u32(&mut self, at: usize) -> Result<u32> {
        Ok(u32::from_le_bytes(self.take(4, at)?.try_into().expect("4")))
    }
    fn u64(&mut self, at: usize) -> Result<u64> {
        Ok(u64::from_le_bytes(self.take(8, at)?.try_into().expect("8")))
    }
    fn line(&mut self, at: usize) -> Result<String> {
        let rest = &self.bytes[self.pos..];
        let end = rest
            .iter()
            .position(|b| *b == b'\n')
            .ok_or_else(|| self.refuse("GLOBAL", at, "unterminated name"))?;
        let s = String::from_utf8_lossy(&rest[..end]).into_owned();
        self.pos += end + 1;
        Ok(s)
    }
    fn pop(&mut self, op: &str, at: usize) -> Result<Value> {
        self.stack
            .pop()
            .ok_or_else(|| self.refuse(op, at, "stack underflow"))
    }
    fn pop_mark(&mut self, op: &str, at: usize) -> Result<Vec<Value>> {
        let m = self
            .marks
            .pop()
            .ok_or_else(|| self.refuse(op, at, "no MARK"))?;
        if m > self.stack.len() {
            return Err(self.refuse(op, at, "MARK beyond stack"));
        }
        Ok(self.stack.split_off(m))
    }

    fn global(&self, module: &str, name: &str, at: usize) -> Result<Value> {
        Ok(Value::Global(match (module, name) {
            ("numpy.core.multiarray" | "numpy._core.multiarray", "_reconstruct") => "_reconstruct",
            ("numpy", "ndarray") => "ndarray",
            ("numpy", "dtype") => "dtype",
            _ => {
                return Err(self.refuse(
                    "GLOBAL",
                    at,
                    format!("global {module}.{name} is not on the allow-list"),
                ))
            }
        }))
    }

    fn run(&mut self) -> Result<Value> {
        loop {
            let at = self.pos;
            let op = self.u8(at)?;
            match op {
                0x80 => {
                    let proto = self.u8(at)?;
                    if !(2..=5).contains(&proto) {
                        return Err(self.refuse("PROTO", at, format!("protocol {proto}")));
                    }
                }
                0x95 => {
                    self.u64(at)?; // FRAME length: frames are read transparently
                }
                b'.' => return self.pop("STOP", at),
                b'(' => self.marks.push(self.stack.len()),
                b'N' => self.stack.push(Value::None),
                0x88 => self.stack.push(Value::Bool(true)),
                0x89 => self.stack.push(Value::Bool(false)),
                b'K' => {
                    let v = self.u8(at)?;
                    self.stack.push(Value::Int(v as i64))
                }
                b'M' => {
                    let v = self.u16(at)?;
                    self.stack.push(Value::Int(v as i64))
                }
                b'J' => {
                    let v = self.u32(at)? as i32;
                    self.stack.push(Value::Int(v as i64))
                }
                0x8c | b'X' => {
                    let n = if op == 0x8c {
                        self.u8(at)? as usize
                    } else {
                        self.u32(at)? as usize
                    };
                    let s = String::from_utf8_lossy(self.take(n, at)?).into_owned();
                    self.stack.push(Value::Str(s))
                }
                b'U' | b'T' | b'C' | b'B' | 0x8e => {
                    let n = match op {
                        b'U' | b'C' => self.u8(at)? as usize,
                        0x8e => self.u64(at)? as usize,
                        _ => self.u32(at)? as usize,
                    };
                    let b = self.take(n, at)?.to_vec();
                    self.stack.push(Value::Bytes(b))
                }
                b'c' => {
                    let module = self.line(at)?;
                    let name = self.line(at)?;
                    let g = self.global(&module, &name, at)?;
                    self.stack.push(g)
                }
                0x93 => {
                    let name = self.pop("STACK_GLOBAL", at)?;
                    let module = self.pop("STACK_GLOBAL", at)?;
                    let (Value::Str(m), Value::Str(n)) = (module, name) else {
                        return Err(self.refuse(
                            "STACK_GLOBAL",
                            at,
                            "module and name must be strings",
                        ));
                    };
                    let g = self.global(&m, &n, at)?;
                    self.stack.push(g)
                }
                b')' => self.stack.push(Value::Tuple(vec![])),
                b't' => {
                    let items = self.pop_mark("TUPLE", at)?;
                    self.stack.push(Value::Tuple(items))
                }
                0x85..=0x87 => {
                    let n = (op - 0x84) as usize;
                    if self.stack.len() < n {
                        return Err(self.refuse("TUPLEn", at, "stack underflow"));
                    }
                    let items = self.stack.split_off(self.stack.len() - n);
                    self.stack.push(Value::Tuple(items))
                }
                b']' => self.stack.push(Value::List(vec![])),
                b'l' => {
                    let items = self.pop_mark("LIST", at)?;
                    self.stack.push(Value::List(items))
                }
                b'a' | b'e' => {
                    let items = if op == b'a' {
                        vec![self.pop("APPEND", at)?]
                    } else {
                        self.pop_mark("APPENDS", at)?
                    };
                    match self.stack.last_mut() {
                        Some(Value::List(l)) => l.extend(items),
                        _ => return Err(self.refuse("APPEND", at, "target is not a list")),
                    }
                }
                b'q' | b'r' | 0x94 => {
                    let idx = match op {
                        b'q' => self.u8(at)? as u32,
                        b'r' => self.u32(at)?,
                        _ => self.memo.len() as u32,
                    };
                    let top = self
                        .stack
                        .last()
                        .cloned()
                        .ok_or_else(|| self.refuse("PUT", at, "empty stack"))?;
                    self.memo.insert(idx, top);
                }
                b'h' | b'j' => {
                    let idx = if op == b'h' {
                        self.u8(at)? as u32
                    } else {
                        self.u32(at)?
                    };
                    let v = self
                        .memo
                        .get(&idx)
                        .cloned()
                        .ok_or_else(|| self.refuse("GET", at, format!("memo {idx} unset")))?;
                    self.stack.push(v)
                }
                b'R' => {
                    let args = self.pop("REDUCE", at)?;
                    let func = self.pop("REDUCE", at)?;
                    let v = self.reduce(func, args, at)?;
                    self.stack.push(v)
                }
                b'b' => {
                    let state = self.pop("BUILD", at)?;
                    let obj = self.pop("BUILD", at)?;
                    let v = self.build(obj, state, at)?;
                    self.stack.push(v)
                }
                other => {
                    return Err(self.refuse(
                        format!("0x{other:02x}"),
                        at,
                        "opcode not used by NumPy array pickles",
                    ))
                }
            }
        }
    }

    /// `_reconstruct(ndarray, (0,), b'b')` -> empty array; `dtype(code, align, copy)` -> dtype.
    fn reduce(&self, func: Value, args: Value, at: usize) -> Result<Value> {
        let Value::Tuple(args) = args else {
            return Err(self.refuse("REDUCE", at, "arguments are not a tuple"));
        };
        match func {
            Value::Global("_reconstruct") => match args.first() {
                Some(Value::Global("ndarray")) => Ok(Value::Array(NdArray {
                    shape: vec![],
                    dtype: String::new(),
                    data: vec![],
                })),
                _ => Err(self.refuse(
                    "REDUCE",
                    at,
                    "_reconstruct of something other than numpy.ndarray",
                )),
            },
            Value::Global("dtype") => match args.first().and_then(text) {
                Some(code) if itemsize(&code).is_some() => Ok(Value::Dtype(code)),
                other => Err(self.refuse(
                    "REDUCE",
                    at,
                    format!("dtype {other:?} is not supported (f4, f8, u1, i4, i8)"),
                )),
            },
            other => Err(self.refuse("REDUCE", at, format!("calling {other:?} is not allowed"))),
        }
    }

    /// `BUILD` of a dtype (state: `(3, byteorder, ...)`) or an array
    /// (state: `(1, shape, dtype, fortran, raw)`).
    fn build(&self, obj: Value, state: Value, at: usize) -> Result<Value> {
        let Value::Tuple(state) = state else {
            return Err(self.refuse("BUILD", at, "state is not a tuple"));
        };
        match obj {
            Value::Dtype(code) => {
                let order = state.get(1).and_then(text).unwrap_or_else(|| "|".into());
                if order == ">" {
                    return Err(self.refuse("BUILD", at, "big-endian dtypes are not supported"));
                }
                Ok(Value::Dtype(format!("{order}{code}")))
            }
            Value::Array(_) => {
                let (
                    Some(Value::Tuple(shape)),
                    Some(Value::Dtype(dtype)),
                    Some(fortran),
                    Some(raw),
                ) = (state.get(1), state.get(2), state.get(3), state.get(4))
                else {
                    return Err(self.refuse(
                        "BUILD",
                        at,
                        "array state is not (version, shape, dtype, fortran, data)",
                    ));
                };
                if *fortran == Value::Bool(true) {
                    return Err(self.refuse(
                        "BUILD",
                        at,
                        "Fortran-ordered arrays are not supported",
                    ));
                }
                let shape = shape
                    .iter()
                    .map(|d| match d {
                        Value::Int(n) if *n >= 0 => Ok(*n as usize),
                        _ => Err(self.refuse("BUILD", at, "bad array shape")),
                    })
                    .collect::<Result<Vec<_>>>()?;
                let data = match raw {
                    Value::Bytes(b) => b.clone(),
                    Value::Str(s) => s.as_bytes().to_vec(),
                    _ => return Err(self.refuse("BUILD", at, "array data is not a byte string")),
                };
                let need = shape.iter().product::<usize>() * itemsize(dtype).unwrap_or(0);
                if data.len() != need {
                    return Err(self.refuse(
                        "BUILD",
                        at,
                        format!(
                            "array {shape:?} {dtype} needs {need} bytes, got {}",
                            data.len()
                        ),
                    ));
                }
                Ok(Value::Array(NdArray {
                    shape,
                    dtype: dtype.clone(),
                    data,
                }))
            }
            other => Err(self.refuse("BUILD", at, format!("building {other:?} is not allowed"))),
        }
    }
}
