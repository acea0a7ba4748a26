"""The pickle opcode interpreter: protocols 2 to 5, building only plain containers, atoms
and the values of the fixed rebuild paths (pickle_rebuilds); nothing the file names is
imported or called. Bounds: opcodes, nesting of open MARKs, memo indices, integer sizes,
keys other than strings, and the file's MemoryBudget."""
import collections
import pickletools
import struct

from .errors import Refused
from .limits import MAX_DEPTH, MAX_LONG_BYTES, MAX_NONSTRING_KEYS, MAX_OPS
from .pickle_rebuilds import Rebuilds
from .pickle_stream import Span, is_bytes
from .pickle_values import ATOMS, Dtype, Global, PendingArray, dtype_state, kind


class Machine(Rebuilds):
    """The pickle opcode interpreter over a pickle_stream.Source. Arrays and bytes are
    spent from `budget` (a MemoryBudget); `storage` (PyTorch only) maps a persistent id to
    a Storage."""

    def __init__(self, source, budget, storage=None, max_ops=MAX_OPS, nonfinite_ids=None):
        self.source, self.budget = source, budget
        self.nonfinite_ids = nonfinite_ids
        self.stack, self.marks, self.memo = [], [], {}
        self.storage = storage
        self.ops = 0
        self.max_ops = max_ops
        self.pool, self.fills = None, []
        self.nonstring_keys = 0
        self.table = [None] * 256
        for code, name in OPCODES.items():
            self.table[ord(code)] = getattr(self, "op_" + name)
        self.byte = source.byte
        self.push = self.stack.append  # self.stack is never rebound
        self.calls = {name[5:]: getattr(self, name) for name in dir(self) if name.startswith("call_")}

    # --- reading the stream ---
    @property
    def pos(self):
        return self.source.pos

    def unpack(self, fmt, size):
        return struct.unpack(fmt, self.source.read(size))[0]

    def chunk(self, n):
        """n bytes of the stream, not copied (a view or a span) when they are large."""
        return self.source.payload(n)

    def line(self):
        return self.text(self.source.line(), "utf-8")

    @staticmethod
    def text(raw, encoding):
        try:
            return str(raw, encoding, "surrogatepass" if encoding == "utf-8" else "strict")
        except UnicodeDecodeError:
            raise Refused("a string that is not valid UTF-8") from None

    # --- the stack ---
    def floor(self):
        return self.marks[-1] if self.marks else 0

    def pop(self):
        if len(self.stack) > (self.marks[-1] if self.marks else 0):
            return self.stack.pop()
        raise Refused(f"stack underflow at offset {self.pos - 1}")

    def top(self):
        if len(self.stack) > (self.marks[-1] if self.marks else 0):
            return self.stack[-1]
        raise Refused(f"stack underflow at offset {self.pos - 1}")

    def pop_mark(self):
        if not self.marks:
            raise Refused(f"no MARK for the opcode at offset {self.pos - 1}")
        start = self.marks.pop()
        items = self.stack[start:]
        del self.stack[start:]
        return items

    def run(self):
        source, table, max_ops = self.source, self.table, self.max_ops
        if source.size < 2 or source.byte() != 0x80:
            raise Refused("not a pickle of protocol 2 to 5 (it does not start with a PROTO opcode)")
        self.op_proto()
        ops = 0
        while True:
            buf, i = source.buf, source.i  # source.byte(), inlined: this loop runs once per opcode
            if i < len(buf):
                source.i = i + 1
                code = buf[i]
            else:
                code = source.byte()
            ops += 1
            if ops > max_ops:
                raise Refused(f"more than {max_ops} pickle opcodes")
            handler = table[code]
            if handler is None:
                raise Refused(unknown_opcode(code, self.pos - 1))
            if handler():
                self.ops = ops
                return self.result

    # --- framing, stop, marks ---
    def op_proto(self):
        version = self.byte()
        if not 2 <= version <= 5:
            raise Refused(f"pickle protocol {version}; only protocols 2 to 5 are read")

    def op_frame(self):
        size = self.unpack("<Q", 8)
        if size > self.source.size - self.pos:
            raise Refused(f"a frame of {size} bytes at offset {self.pos - 9} runs past the end of the file")

    def op_stop(self):
        if self.marks or len(self.stack) != 1:
            raise Refused(f"STOP with {len(self.stack)} objects and {len(self.marks)} marks left")
        if self.pos != self.source.size:
            raise Refused(f"{self.source.size - self.pos} bytes after the pickle's STOP")
        self.result = self.stack.pop()
        return True

    def op_mark(self):
        if len(self.marks) >= MAX_DEPTH:  # a MARK opens a container: this many are never open at once
            raise Refused(f"containers nested deeper than {MAX_DEPTH} (open MARKs)")
        self.marks.append(len(self.stack))

    def op_pop(self):
        if len(self.stack) > self.floor():
            self.stack.pop()
        else:
            self.pop_mark()

    def op_pop_mark(self):
        self.pop_mark()

    def op_dup(self):
        self.push(self.top())

    # --- atoms ---
    def op_none(self):
        self.push(None)

    def op_newtrue(self):
        self.push(True)

    def op_newfalse(self):
        self.push(False)

    def op_binint(self):
        self.push(self.unpack("<i", 4))

    def op_binint1(self):
        self.push(self.byte())

    def op_binint2(self):
        self.push(self.unpack("<H", 2))

    def op_long1(self):
        self.push(self.long(self.byte()))

    def op_long4(self):
        self.push(self.long(self.unpack("<i", 4)))

    def long(self, size):
        if size < 0 or size > MAX_LONG_BYTES:
            raise Refused(f"an integer of {size} bytes (at most {MAX_LONG_BYTES} are read)")
        return int.from_bytes(self.source.read(size), "little", signed=True)

    def op_binfloat(self):
        self.push(self.unpack(">d", 8))

    def op_short_binunicode(self):
        self.push(self.text(self.source.read(self.byte()), "utf-8"))

    def op_binunicode(self):
        self.push(self.text(self.source.read(self.unpack("<I", 4)), "utf-8"))

    def op_binunicode8(self):
        self.push(self.text(self.source.read(self.unpack("<Q", 8)), "utf-8"))

    def op_short_binstring(self):  # Python 2 str; paddle.load reads it as latin1
        self.push(self.text(self.source.read(self.byte()), "latin1"))

    def op_binstring(self):
        self.push(self.text(self.source.read(self.unpack("<i", 4)), "latin1"))

    def op_short_binbytes(self):
        self.push(self.chunk(self.byte()))

    def op_binbytes(self):
        self.push(self.chunk(self.unpack("<I", 4)))

    def op_binbytes8(self):
        self.push(self.chunk(self.unpack("<Q", 8)))

    def op_bytearray8(self):
        self.push(self.chunk(self.unpack("<Q", 8)))

    def op_readonly_buffer(self):
        if not is_bytes(self.top()):
            raise Refused("READONLY_BUFFER on something other than a buffer")

    # --- containers ---
    def op_empty_tuple(self):
        self.push(())

    def op_tuple1(self):
        self.push((self.pop(),))

    def op_tuple2(self):
        second = self.pop()
        self.push((self.pop(), second))

    def op_tuple3(self):
        third, second = self.pop(), self.pop()
        self.push((self.pop(), second, third))

    def op_tuple(self):
        self.push(tuple(self.pop_mark()))

    def op_empty_list(self):
        self.push([])

    def op_list(self):
        self.push(self.pop_mark())

    def op_append(self):
        value = self.pop()
        self.target_list().append(value)

    def op_appends(self):
        items = self.pop_mark()
        self.target_list().extend(items)

    def target_list(self):
        target = self.top()
        if type(target) is not list:
            raise Refused(f"APPEND to a {kind(target)}")
        return target

    def op_empty_dict(self):
        self.push({})

    def op_dict(self):
        target = {}
        self.set_items(target, self.pop_mark())
        self.push(target)

    def op_setitem(self):
        value = self.pop()
        key = self.pop()
        self.set_items(self.top(), (key, value))

    def op_setitems(self):
        items = self.pop_mark()
        self.set_items(self.top(), items)

    def set_items(self, target, items):
        if type(target) not in (dict, collections.OrderedDict):
            raise Refused(f"SETITEM on a {kind(target)}")
        if len(items) % 2:
            raise Refused("SETITEMS with an odd number of items")
        for i in range(0, len(items), 2):
            key = items[i]
            if isinstance(key, (memoryview, Span)):
                key = self.spend_bytes(key)
            if type(key) is not str:
                if type(key) not in ATOMS:
                    raise Refused(f"a dict key that is a {kind(key)} (only str, bytes and numbers are read)")
                self.count_nonstring_keys(1)
            target[key] = items[i + 1]

    def count_nonstring_keys(self, n):
        """Keys other than strings can be made to collide in their hashes (quadratic inserts)."""
        self.nonstring_keys += n
        if self.nonstring_keys > MAX_NONSTRING_KEYS:
            raise Refused(f"more than {MAX_NONSTRING_KEYS} dict keys that are not strings (weights files "
                          f"name their entries with strings)")

    # --- memo ---
    def op_binput(self):
        self.put(self.byte())

    def op_long_binput(self):
        self.put(self.unpack("<I", 4))

    def op_memoize(self):
        stack = self.stack
        if len(stack) <= (self.marks[-1] if self.marks else 0):
            raise Refused(f"MEMOIZE on an empty stack at offset {self.pos - 1}")
        self.memo[len(self.memo)] = stack[-1]

    def put(self, index):
        if index > self.max_ops:
            raise Refused(f"memo index {index} (at most {self.max_ops})")
        self.memo[index] = self.top()

    def op_binget(self):
        self.get(self.byte())

    def op_long_binget(self):
        self.get(self.unpack("<I", 4))

    def get(self, index):
        try:
            self.stack.append(self.memo[index])
        except KeyError:
            raise Refused(f"memo index {index} read before it was written") from None

    # --- globals, calls, states ---
    def op_global(self):
        module = self.line()
        self.push(self.symbol(module, self.line()))

    def op_stack_global(self):
        name, module = self.pop(), self.pop()
        if type(name) is not str or type(module) is not str:
            raise Refused("STACK_GLOBAL on something other than two strings")
        self.push(self.symbol(module, name))

    def op_reduce(self):
        args = self.pop()
        func = self.pop()
        if not isinstance(func, Global):
            raise Refused(f"REDUCE calls a {kind(func)}")
        if type(args) is not tuple:
            raise Refused(f"REDUCE of {func.name} with arguments that are not a tuple")
        self.push(self.calls[func.kind](func, args))

    def op_build(self):
        state = self.pop()
        target = self.top()
        if isinstance(target, PendingArray) and target.array is None:
            target.array = self.build_array(state)
            self.stack[-1] = target.array
        elif isinstance(target, Dtype) and not target.built:
            target.dtype = dtype_state(target.dtype, state)
            target.built = True
        elif type(target) is collections.OrderedDict and self.storage is not None:
            if type(state) not in (dict, type(None)):  # PyTorch's state_dict()._metadata: not kept
                raise Refused(f"BUILD of an OrderedDict with a {kind(state)}")
        else:
            raise Refused(f"BUILD (set the state) of a {kind(target)}")

    def op_binpersid(self):
        pid = self.pop()
        if self.storage is None:
            raise Refused("a persistent id (PyTorch storage reference) in a pickle that is not in a PyTorch zip")
        self.push(self.storage(pid))

    # --- the fixed rebuild paths ---
OPCODES = {
    "\x80": "proto", "\x95": "frame", ".": "stop", "(": "mark", "0": "pop", "1": "pop_mark", "2": "dup",
    "N": "none", "\x88": "newtrue", "\x89": "newfalse", "J": "binint", "K": "binint1", "M": "binint2",
    "\x8a": "long1", "\x8b": "long4", "G": "binfloat",
    "\x8c": "short_binunicode", "X": "binunicode", "\x8d": "binunicode8", "U": "short_binstring", "T": "binstring",
    "C": "short_binbytes", "B": "binbytes", "\x8e": "binbytes8", "\x96": "bytearray8", "\x98": "readonly_buffer",
    ")": "empty_tuple", "\x85": "tuple1", "\x86": "tuple2", "\x87": "tuple3", "t": "tuple",
    "]": "empty_list", "l": "list", "a": "append", "e": "appends",
    "}": "empty_dict", "d": "dict", "s": "setitem", "u": "setitems",
    "q": "binput", "r": "long_binput", "\x94": "memoize", "h": "binget", "j": "long_binget",
    "c": "global", "\x93": "stack_global", "R": "reduce", "b": "build", "Q": "binpersid",
}


def unknown_opcode(code, offset):
    info = pickletools.code2op.get(chr(code))
    if info is None:
        return f"byte 0x{code:02x} at offset {offset} is not a pickle opcode"
    return f"opcode {info.name} at offset {offset} is not read (no weights file needs it)"

