//! A pickle reader that executes nothing: it understands the opcodes `torch.save` emits
//! for a state dict (protocols 2 to 5) and builds plain values; the only callables it
//! knows are the reconstructors a state dict needs (`collections.OrderedDict`,
//! `torch._utils._rebuild_tensor_v2`, `torch._utils._rebuild_parameter`), and storages are
//! recognised by name. Any other global, opcode or persistent id is an error naming it.

use std::rc::Rc;

/// A value on the machine's stack. Payloads that nothing reads are kept for the error
/// messages, which print the value.
#[derive(Clone, Debug)]
#[allow(dead_code)]
pub(super) enum Value {
    None,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(Rc<str>),
    Bytes(Rc<[u8]>),
    Tuple(Rc<Vec<Value>>),
    List(Rc<Vec<Value>>),
    Dict(Rc<Vec<(Value, Value)>>),
    /// A callable the reader knows, by its name.
    Global(Global),
    /// A storage: element type name (`FloatStorage`, …), key of its data entry, length.
    Storage {
        dtype: Rc<str>,
        key: Rc<str>,
        numel: usize,
    },
    /// A tensor view of a storage.
    Tensor(Rc<TensorRef>),
}

/// The callables and type names the reader accepts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Global {
    OrderedDict,
    RebuildTensor,
    RebuildParameter,
    /// A storage type (`torch.FloatStorage`, …), named by index into [`STORAGES`].
    StorageType(usize),
}

/// The storage types and their element sizes.
pub(super) const STORAGES: &[(&str, usize)] = &[
    ("FloatStorage", 4),
    ("DoubleStorage", 8),
    ("HalfStorage", 2),
    ("BFloat16Storage", 2),
    ("LongStorage", 8),
    ("IntStorage", 4),
    ("ShortStorage", 2),
    ("CharStorage", 1),
    ("ByteStorage", 1),
    ("BoolStorage", 1),
];

/// A tensor as `_rebuild_tensor_v2` describes it.
#[derive(Debug)]
pub(super) struct TensorRef {
    pub dtype: Rc<str>,
    pub key: Rc<str>,
    pub storage_numel: usize,
    pub offset: usize,
    pub shape: Vec<usize>,
    pub stride: Vec<usize>,
}

/// The most values the memo or the stack may hold, and the deepest mark nesting: far
/// beyond what a state dict needs, and a bound on what a hostile file can make us keep.
const LIMIT: usize = 1 << 22;

struct Machine<'a> {
    data: &'a [u8],
    at: usize,
    stack: Vec<Value>,
    marks: Vec<usize>,
    memo: Vec<Option<Value>>,
}

fn err<T>(msg: impl Into<String>) -> Result<T, String> {
    Err(msg.into())
}

impl<'a> Machine<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        let end = self
            .at
            .checked_add(n)
            .filter(|&e| e <= self.data.len())
            .ok_or("the pickle ends in the middle of an instruction")?;
        let out = &self.data[self.at..end];
        self.at = end;
        Ok(out)
    }

    fn u8(&mut self) -> Result<u8, String> {
        Ok(self.take(1)?[0])
    }

    fn u16(&mut self) -> Result<u16, String> {
        Ok(u16::from_le_bytes(
            self.take(2)?.try_into().expect("2 bytes"),
        ))
    }

    fn u32(&mut self) -> Result<u32, String> {
        Ok(u32::from_le_bytes(
            self.take(4)?.try_into().expect("4 bytes"),
        ))
    }

    fn u64(&mut self) -> Result<u64, String> {
        Ok(u64::from_le_bytes(
            self.take(8)?.try_into().expect("8 bytes"),
        ))
    }

    fn line(&mut self) -> Result<&'a str, String> {
        let rest = &self.data[self.at..];
        let n = rest
            .iter()
            .position(|&b| b == b'\n')
            .ok_or("an unterminated text argument")?;
        let s = std::str::from_utf8(&rest[..n]).map_err(|_| "a text argument is not UTF-8")?;
        self.at += n + 1;
        Ok(s)
    }

    fn push(&mut self, v: Value) -> Result<(), String> {
        if self.stack.len() >= LIMIT {
            return err("the pickle's stack grows beyond any state dict's");
        }
        self.stack.push(v);
        Ok(())
    }

    fn pop(&mut self) -> Result<Value, String> {
        let floor = self.marks.last().copied().unwrap_or(0);
        if self.stack.len() <= floor {
            return err("an instruction pops from an empty stack");
        }
        Ok(self.stack.pop().expect("checked"))
    }

    fn pop_mark(&mut self) -> Result<Vec<Value>, String> {
        let mark = self
            .marks
            .pop()
            .ok_or("an instruction needs a mark that is not there")?;
        Ok(self.stack.split_off(mark))
    }

    fn top(&mut self) -> Result<&mut Value, String> {
        let floor = self.marks.last().copied().unwrap_or(0);
        if self.stack.len() <= floor {
            return err("an instruction reads an empty stack");
        }
        Ok(self.stack.last_mut().expect("checked"))
    }

    fn str(&mut self, n: usize) -> Result<Value, String> {
        let b = self.take(n)?;
        let s = std::str::from_utf8(b).map_err(|_| "a string is not UTF-8")?;
        Ok(Value::Str(s.into()))
    }

    fn memo_put(&mut self, i: usize) -> Result<(), String> {
        if i >= LIMIT {
            return err(format!("memo index {i} is beyond any state dict's"));
        }
        let v = self.top()?.clone();
        if self.memo.len() <= i {
            self.memo.resize(i + 1, None);
        }
        self.memo[i] = Some(v);
        Ok(())
    }

    fn memo_get(&mut self, i: usize) -> Result<(), String> {
        let v = self
            .memo
            .get(i)
            .and_then(Clone::clone)
            .ok_or_else(|| format!("memo entry {i} is read before it is written"))?;
        self.push(v)
    }

    fn global(module: &str, name: &str) -> Result<Global, String> {
        Ok(match (module, name) {
            ("collections", "OrderedDict") => Global::OrderedDict,
            ("torch._utils", "_rebuild_tensor_v2") => Global::RebuildTensor,
            ("torch._utils", "_rebuild_parameter") => Global::RebuildParameter,
            ("torch", s) if STORAGES.iter().any(|(n, _)| *n == s) => {
                Global::StorageType(STORAGES.iter().position(|(n, _)| *n == s).expect("found"))
            }
            _ => {
                return err(format!(
                    "the pickle refers to {module}.{name}, which a state dict does not need; only tensors, \
                     storages and ordered dicts are read (nothing is executed)"
                ));
            }
        })
    }

    fn call(f: Global, args: &[Value]) -> Result<Value, String> {
        match f {
            Global::OrderedDict if args.is_empty() => Ok(Value::Dict(Rc::new(Vec::new()))),
            Global::RebuildTensor => rebuild_tensor(args),
            Global::RebuildParameter => match args.first() {
                Some(t @ Value::Tensor(_)) => Ok(t.clone()),
                _ => err("_rebuild_parameter expects a tensor"),
            },
            _ => err(format!(
                "{f:?} cannot be called with {} argument(s)",
                args.len()
            )),
        }
    }

    fn persistent(id: Value) -> Result<Value, String> {
        let Value::Tuple(t) = id else {
            return err("a persistent id that is not a tuple");
        };
        match t.as_slice() {
            [
                Value::Str(kind),
                Value::Global(Global::StorageType(i)),
                Value::Str(key),
                _location,
                Value::Int(numel),
            ] if &**kind == "storage" => {
                let numel = usize::try_from(*numel).map_err(|_| "a storage of negative length")?;
                Ok(Value::Storage {
                    dtype: STORAGES[*i].0.into(),
                    key: key.clone(),
                    numel,
                })
            }
            _ => err(format!("an unsupported persistent id {t:?}")),
        }
    }
}

fn usizes(v: &Value, what: &str) -> Result<Vec<usize>, String> {
    let Value::Tuple(t) = v else {
        return err(format!("the tensor's {what} is not a tuple"));
    };
    t.iter()
        .map(|x| match x {
            Value::Int(i) => usize::try_from(*i).map_err(|_| format!("a negative {what} entry")),
            _ => err(format!("a {what} entry that is not an integer")),
        })
        .collect()
}

fn rebuild_tensor(args: &[Value]) -> Result<Value, String> {
    let [storage, Value::Int(offset), size, stride, ..] = args else {
        return err("_rebuild_tensor_v2 expects (storage, offset, size, stride, ...)");
    };
    let Value::Storage { dtype, key, numel } = storage else {
        return err("_rebuild_tensor_v2 expects a storage first");
    };
    let (shape, stride) = (usizes(size, "size")?, usizes(stride, "stride")?);
    if shape.len() != stride.len() {
        return err(format!(
            "a tensor of shape {shape:?} with strides {stride:?}"
        ));
    }
    let offset = usize::try_from(*offset).map_err(|_| "a negative storage offset")?;
    // The last element read must lie inside the storage.
    if shape.iter().all(|&s| s > 0) {
        let last = shape
            .iter()
            .zip(&stride)
            .try_fold(offset, |acc, (&s, &st)| acc.checked_add((s - 1).checked_mul(st)?))
            .filter(|&l| l < *numel)
            .ok_or_else(|| {
                format!(
                    "a tensor of shape {shape:?}, strides {stride:?} at offset {offset} reads past its storage of {numel} elements"
                )
            })?;
        let _ = last;
    }
    Ok(Value::Tensor(Rc::new(TensorRef {
        dtype: dtype.clone(),
        key: key.clone(),
        storage_numel: *numel,
        offset,
        shape,
        stride,
    })))
}

/// Runs the pickle `data` and returns the value it builds.
pub(super) fn load(data: &[u8]) -> Result<Value, String> {
    let mut m = Machine {
        data,
        at: 0,
        stack: Vec::new(),
        marks: Vec::new(),
        memo: Vec::new(),
    };
    loop {
        let op = m.u8()?;
        match op {
            0x80 => {
                let proto = m.u8()?;
                if !(2..=5).contains(&proto) {
                    return err(format!("pickle protocol {proto} (expected 2 to 5)"));
                }
            }
            0x95 => {
                m.u64()?; // FRAME: a length hint
            }
            b'.' => return m.pop(),
            b'(' => {
                if m.marks.len() >= LIMIT {
                    return err("marks nested beyond any state dict's");
                }
                m.marks.push(m.stack.len());
            }
            b'N' => m.push(Value::None)?,
            0x88 => m.push(Value::Bool(true))?,
            0x89 => m.push(Value::Bool(false))?,
            b'J' => {
                let v = m.u32()? as i32;
                m.push(Value::Int(i64::from(v)))?;
            }
            b'K' => {
                let v = m.u8()?;
                m.push(Value::Int(i64::from(v)))?;
            }
            b'M' => {
                let v = m.u16()?;
                m.push(Value::Int(i64::from(v)))?;
            }
            0x8a => {
                // LONG1: a little-endian two's complement integer of n bytes.
                let n = usize::from(m.u8()?);
                if n > 8 {
                    return err("an integer wider than 64 bits");
                }
                let b = m.take(n)?;
                let mut v: i64 = 0;
                for (k, &byte) in b.iter().enumerate() {
                    v |= i64::from(byte) << (8 * k);
                }
                if n > 0 && n < 8 && b[n - 1] & 0x80 != 0 {
                    v -= 1i64 << (8 * n);
                }
                m.push(Value::Int(v))?;
            }
            b'G' => {
                let v = f64::from_be_bytes(m.take(8)?.try_into().expect("8 bytes"));
                m.push(Value::Float(v))?;
            }
            b'X' => {
                let n = m.u32()? as usize;
                let v = m.str(n)?;
                m.push(v)?;
            }
            0x8c => {
                let n = usize::from(m.u8()?);
                let v = m.str(n)?;
                m.push(v)?;
            }
            0x8d => {
                let n = usize::try_from(m.u64()?).map_err(|_| "a string longer than memory")?;
                let v = m.str(n)?;
                m.push(v)?;
            }
            b'U' => {
                let n = usize::from(m.u8()?);
                let v = m.str(n)?;
                m.push(v)?;
            }
            b'T' | b'B' => {
                let n = if op == b'T' {
                    m.u32()? as usize
                } else {
                    usize::from(m.u8()?)
                };
                let b = m.take(n)?;
                m.push(Value::Bytes(b.into()))?;
            }
            b'C' => {
                let n = usize::from(m.u8()?);
                let b = m.take(n)?;
                m.push(Value::Bytes(b.into()))?;
            }
            b')' => m.push(Value::Tuple(Rc::new(Vec::new())))?,
            0x85..=0x87 => {
                let n = usize::from(op - 0x84);
                let floor = m.marks.last().copied().unwrap_or(0);
                if m.stack.len() < floor + n {
                    return err("a tuple instruction finds too few values");
                }
                let items = m.stack.split_off(m.stack.len() - n);
                m.push(Value::Tuple(Rc::new(items)))?;
            }
            b't' => {
                let items = m.pop_mark()?;
                m.push(Value::Tuple(Rc::new(items)))?;
            }
            b']' => m.push(Value::List(Rc::new(Vec::new())))?,
            b'l' => {
                let items = m.pop_mark()?;
                m.push(Value::List(Rc::new(items)))?;
            }
            b'}' => m.push(Value::Dict(Rc::new(Vec::new())))?,
            b'd' => {
                let items = m.pop_mark()?;
                let pairs = pairs(items)?;
                m.push(Value::Dict(Rc::new(pairs)))?;
            }
            b'a' => {
                let v = m.pop()?;
                match m.top()? {
                    Value::List(l) => Rc::make_mut(l).push(v),
                    _ => return err("APPEND to something that is not a list"),
                }
            }
            b'e' => {
                let items = m.pop_mark()?;
                match m.top()? {
                    Value::List(l) => Rc::make_mut(l).extend(items),
                    _ => return err("APPENDS to something that is not a list"),
                }
            }
            b's' => {
                let v = m.pop()?;
                let k = m.pop()?;
                match m.top()? {
                    Value::Dict(d) => Rc::make_mut(d).push((k, v)),
                    _ => return err("SETITEM on something that is not a dict"),
                }
            }
            b'u' => {
                let items = m.pop_mark()?;
                let new = pairs(items)?;
                match m.top()? {
                    Value::Dict(d) => Rc::make_mut(d).extend(new),
                    _ => return err("SETITEMS on something that is not a dict"),
                }
            }
            b'q' => {
                let i = usize::from(m.u8()?);
                m.memo_put(i)?;
            }
            b'r' => {
                let i = m.u32()? as usize;
                m.memo_put(i)?;
            }
            0x94 => {
                let i = m.memo.len();
                m.memo_put(i)?;
            }
            b'h' => {
                let i = usize::from(m.u8()?);
                m.memo_get(i)?;
            }
            b'j' => {
                let i = m.u32()? as usize;
                m.memo_get(i)?;
            }
            b'2' => {
                let v = m.top()?.clone();
                m.push(v)?;
            }
            b'0' => {
                m.pop()?;
            }
            b'1' => {
                m.pop_mark()?;
            }
            b'c' => {
                let module = m.line()?;
                let name = m.line()?;
                let g = Machine::global(module, name)?;
                m.push(Value::Global(g))?;
            }
            0x93 => {
                let name = m.pop()?;
                let module = m.pop()?;
                let (Value::Str(module), Value::Str(name)) = (module, name) else {
                    return err("STACK_GLOBAL with names that are not strings");
                };
                let g = Machine::global(&module, &name)?;
                m.push(Value::Global(g))?;
            }
            b'Q' => {
                let id = m.pop()?;
                let v = Machine::persistent(id)?;
                m.push(v)?;
            }
            b'R' => {
                let args = m.pop()?;
                let f = m.pop()?;
                let (Value::Global(f), Value::Tuple(args)) = (f, args) else {
                    return err("REDUCE of something the reader does not know how to call");
                };
                let v = Machine::call(f, &args)?;
                m.push(v)?;
            }
            b'b' => {
                // BUILD: the state of an object; an OrderedDict's `_metadata` is dropped.
                let _state = m.pop()?;
                if !matches!(m.top()?, Value::Dict(_)) {
                    return err("BUILD on something that is not a dict");
                }
            }
            other => {
                return err(format!(
                    "pickle opcode 0x{other:02x} at byte {} is not one a state dict uses",
                    m.at - 1
                ));
            }
        }
    }
}

fn pairs(items: Vec<Value>) -> Result<Vec<(Value, Value)>, String> {
    if !items.len().is_multiple_of(2) {
        return err("a dict built from an odd number of values");
    }
    let mut out = Vec::with_capacity(items.len() / 2);
    let mut it = items.into_iter();
    while let (Some(k), Some(v)) = (it.next(), it.next()) {
        out.push((k, v));
    }
    Ok(out)
}
