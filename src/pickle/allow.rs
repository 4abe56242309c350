//! The allow-list: the only `module.name` globals a pickle may name.
//!
//! Every GLOBAL / STACK_GLOBAL / INST is looked up here before anything is
//! built; a name that is not in [`TABLE`] is refused with its offset. Being on
//! the list never runs anything either: the machine only records "a call of
//! `numpy.core.multiarray._reconstruct` with these arguments" and the frame
//! builder interprets that record. The names were taken from pickles written
//! by pandas 1.5 / 2.x / 3.x with numpy 1.x / 2.x at protocols 2, 4 and 5
//! (`python -m pickletools`), plus the Python 2 spellings (`__builtin__`,
//! `copy_reg`) that protocol 0–2 pickles use.

/// What an allowed global stands for; the frame builder matches on this.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    // ---- numpy ----
    /// `numpy.core.multiarray._reconstruct(ndarray, (0,), b'b')` + BUILD state.
    NpReconstruct,
    /// `numpy.ndarray` (the class handed to `_reconstruct`).
    NpNdarray,
    /// `numpy.dtype(str, align, copy)` + BUILD state.
    NpDtype,
    /// `numpy.core.numeric._frombuffer(buffer, dtype, shape, order)`.
    NpFromBuffer,
    /// `numpy.core.multiarray.scalar(dtype, bytes)`.
    NpScalar,
    // ---- pandas containers ----
    /// `pandas.core.frame.DataFrame`.
    DataFrame,
    /// `pandas.core.series.Series` (recognised so it can be refused by name).
    Series,
    /// `pandas.core.internals.managers.BlockManager`.
    BlockManager,
    /// `pandas.core.internals.managers.SingleBlockManager`.
    SingleBlockManager,
    /// `pandas._libs.internals._unpickle_block(values, placement, ndim)`.
    UnpickleBlock,
    /// `pandas._libs.internals.BlockPlacement(slice|array)`.
    BlockPlacement,
    /// `pandas.core.internals.blocks.*Block` classes (pandas < 1.x style).
    BlockClass,
    /// `pandas.core.indexes.base._new_Index(cls, dict)`.
    NewIndex,
    /// An Index class (`Index`, `RangeIndex`, `DatetimeIndex`, `Int64Index`...).
    IndexClass,
    /// `pandas.core.indexes.multi.MultiIndex`.
    MultiIndex,
    // ---- pandas arrays and dtypes ----
    /// `pandas._libs.arrays.__pyx_unpickle_NDArrayBacked(cls, checksum, state)`.
    UnpickleNDArrayBacked,
    /// `Categorical`.
    Categorical,
    /// `CategoricalDtype`.
    CategoricalDtype,
    /// `IntegerArray` / `FloatingArray` / `BooleanArray` (masked arrays).
    MaskedArray,
    /// `Int64Dtype`, `BooleanDtype`, `Float64Dtype`... (masked dtypes).
    MaskedDtype,
    /// `DatetimeArray`.
    DatetimeArray,
    /// `TimedeltaArray`.
    TimedeltaArray,
    /// `DatetimeTZDtype`.
    DatetimeTZDtype,
    /// `StringArray` (object ndarray of str / NA).
    StringArray,
    /// `ArrowStringArray` (and its NumpySemantics/ArrowExtensionArray kin).
    ArrowStringArray,
    /// `StringDtype`.
    StringDtype,
    /// `ArrowDtype`.
    ArrowDtype,
    /// `pandas._libs.missing.NA`.
    PandasNA,
    /// `pandas._libs.tslibs.nattype.__nat_unpickle` (NaT).
    NaT,
    // ---- pyarrow ----
    /// `pyarrow.lib._restore_array(tuple)`.
    PaRestoreArray,
    /// `pyarrow.lib.type_for_alias(str)`.
    PaTypeForAlias,
    /// `pyarrow.lib.py_buffer(bytes)`.
    PaPyBuffer,
    /// `pyarrow.lib.chunked_array(list, type)`.
    PaChunkedArray,
    // ---- Python built-ins the machine evaluates itself (pure, bounded) ----
    /// `builtins.slice(start, stop, step)`.
    Slice,
    /// `_codecs.encode(str, 'latin1')` (protocol 2 bytes).
    CodecsEncode,
    /// `copyreg._reconstructor(cls, base, state)` (protocol 0/1 objects).
    CopyregReconstructor,
    /// `copyreg.__newobj__(cls, *args)`.
    CopyregNewObj,
    /// `builtins.object`.
    Object,
    /// `collections.OrderedDict`.
    OrderedDict,
    /// `builtins.set`.
    Set,
    /// `builtins.frozenset`.
    FrozenSet,
    /// `builtins.bytearray`.
    ByteArray,
    /// `builtins.bytes`.
    Bytes,
    /// `builtins.list`.
    List,
    /// `builtins.tuple`.
    Tuple,
    /// `builtins.dict`.
    Dict,
    /// `builtins.complex` / `builtins.int` / `builtins.float` / `builtins.str`.
    Builtin,
    /// `datetime.timezone`, `datetime.timedelta`, `pytz` helpers,
    /// `zoneinfo.ZoneInfo._unpickle`.
    TimeZone,
    /// `zoneinfo.ZoneInfo` (only as the object of the one allowed getattr).
    ZoneInfo,
    /// `builtins.getattr`: allowed at GLOBAL because pandas 3 pickles
    /// `getattr(zoneinfo.ZoneInfo, '_unpickle')`; the machine refuses every
    /// other use of it when it is called.
    GetAttr,
}

/// One allowed global.
#[derive(Debug)]
pub struct Allowed {
    /// Module as the pickle spells it.
    pub module: &'static str,
    /// Qualified name inside the module.
    pub name: &'static str,
    /// What it stands for.
    pub kind: Kind,
}

macro_rules! allow {
    ($($module:literal $name:literal => $kind:ident,)*) => {
        /// Every global a pickle may name. Anything else is refused.
        pub static TABLE: &[Allowed] = &[
            $(Allowed { module: $module, name: $name, kind: Kind::$kind },)*
        ];
    };
}

allow! {
    // numpy 1.x (numpy.core) and 2.x (numpy._core)
    "numpy.core.multiarray" "_reconstruct" => NpReconstruct,
    "numpy._core.multiarray" "_reconstruct" => NpReconstruct,
    "numpy.core.multiarray" "scalar" => NpScalar,
    "numpy._core.multiarray" "scalar" => NpScalar,
    "numpy.core.numeric" "_frombuffer" => NpFromBuffer,
    "numpy._core.numeric" "_frombuffer" => NpFromBuffer,
    "numpy.core.multiarray" "ndarray" => NpNdarray,
    "numpy._core.multiarray" "ndarray" => NpNdarray,
    "numpy.core.multiarray" "dtype" => NpDtype,
    "numpy._core.multiarray" "dtype" => NpDtype,
    "numpy.core.numeric" "ndarray" => NpNdarray,
    "numpy._core.numeric" "ndarray" => NpNdarray,
    "numpy.core.numeric" "dtype" => NpDtype,
    "numpy._core.numeric" "dtype" => NpDtype,
    "numpy" "ndarray" => NpNdarray,
    "numpy" "dtype" => NpDtype,

    // pandas frame and block managers (1.5, 2.x, 3.x spellings)
    "pandas.core.frame" "DataFrame" => DataFrame,
    "pandas" "DataFrame" => DataFrame,
    "pandas.core.series" "Series" => Series,
    "pandas" "Series" => Series,
    "pandas.core.internals.managers" "BlockManager" => BlockManager,
    "pandas.core.internals.managers" "SingleBlockManager" => SingleBlockManager,
    "pandas._libs.internals" "_unpickle_block" => UnpickleBlock,
    "pandas._libs.internals" "BlockPlacement" => BlockPlacement,
    "pandas.core.internals.blocks" "new_block" => UnpickleBlock,
    "pandas.core.internals.blocks" "Block" => BlockClass,
    "pandas.core.internals.blocks" "NumpyBlock" => BlockClass,
    "pandas.core.internals.blocks" "ObjectBlock" => BlockClass,
    "pandas.core.internals.blocks" "FloatBlock" => BlockClass,
    "pandas.core.internals.blocks" "IntBlock" => BlockClass,
    "pandas.core.internals.blocks" "BoolBlock" => BlockClass,
    "pandas.core.internals.blocks" "NumericBlock" => BlockClass,
    "pandas.core.internals.blocks" "ExtensionBlock" => BlockClass,
    "pandas.core.internals.blocks" "CategoricalBlock" => BlockClass,
    "pandas.core.internals.blocks" "DatetimeBlock" => BlockClass,
    "pandas.core.internals.blocks" "DatetimeLikeBlock" => BlockClass,
    "pandas.core.internals.blocks" "DatetimeTZBlock" => BlockClass,

    // indexes
    "pandas.core.indexes.base" "_new_Index" => NewIndex,
    "pandas.core.indexes.base" "Index" => IndexClass,
    "pandas" "Index" => IndexClass,
    "pandas.core.indexes.range" "RangeIndex" => IndexClass,
    "pandas" "RangeIndex" => IndexClass,
    "pandas.core.indexes.numeric" "Int64Index" => IndexClass,
    "pandas.core.indexes.numeric" "UInt64Index" => IndexClass,
    "pandas.core.indexes.numeric" "Float64Index" => IndexClass,
    "pandas.core.indexes.numeric" "NumericIndex" => IndexClass,
    "pandas.core.indexes.datetimes" "DatetimeIndex" => IndexClass,
    "pandas" "DatetimeIndex" => IndexClass,
    "pandas.core.indexes.datetimes" "_new_DatetimeIndex" => NewIndex,
    "pandas.core.indexes.timedeltas" "TimedeltaIndex" => IndexClass,
    "pandas" "TimedeltaIndex" => IndexClass,
    "pandas.core.indexes.category" "CategoricalIndex" => IndexClass,
    "pandas" "CategoricalIndex" => IndexClass,
    "pandas.core.indexes.multi" "MultiIndex" => MultiIndex,
    "pandas" "MultiIndex" => MultiIndex,

    // extension arrays and their dtypes
    "pandas._libs.arrays" "__pyx_unpickle_NDArrayBacked" => UnpickleNDArrayBacked,
    "pandas.core.arrays.categorical" "Categorical" => Categorical,
    "pandas" "Categorical" => Categorical,
    "pandas.arrays" "Categorical" => Categorical,
    "pandas.core.dtypes.dtypes" "CategoricalDtype" => CategoricalDtype,
    "pandas" "CategoricalDtype" => CategoricalDtype,
    "pandas.core.arrays.integer" "IntegerArray" => MaskedArray,
    "pandas.core.arrays.boolean" "BooleanArray" => MaskedArray,
    "pandas.core.arrays.floating" "FloatingArray" => MaskedArray,
    "pandas.arrays" "IntegerArray" => MaskedArray,
    "pandas.arrays" "BooleanArray" => MaskedArray,
    "pandas.arrays" "FloatingArray" => MaskedArray,
    "pandas.core.arrays.integer" "Int8Dtype" => MaskedDtype,
    "pandas.core.arrays.integer" "Int16Dtype" => MaskedDtype,
    "pandas.core.arrays.integer" "Int32Dtype" => MaskedDtype,
    "pandas.core.arrays.integer" "Int64Dtype" => MaskedDtype,
    "pandas.core.arrays.integer" "UInt8Dtype" => MaskedDtype,
    "pandas.core.arrays.integer" "UInt16Dtype" => MaskedDtype,
    "pandas.core.arrays.integer" "UInt32Dtype" => MaskedDtype,
    "pandas.core.arrays.integer" "UInt64Dtype" => MaskedDtype,
    "pandas.core.arrays.boolean" "BooleanDtype" => MaskedDtype,
    "pandas.core.arrays.floating" "Float32Dtype" => MaskedDtype,
    "pandas.core.arrays.floating" "Float64Dtype" => MaskedDtype,
    "pandas" "Int8Dtype" => MaskedDtype,
    "pandas" "Int16Dtype" => MaskedDtype,
    "pandas" "Int32Dtype" => MaskedDtype,
    "pandas" "Int64Dtype" => MaskedDtype,
    "pandas" "UInt8Dtype" => MaskedDtype,
    "pandas" "UInt16Dtype" => MaskedDtype,
    "pandas" "UInt32Dtype" => MaskedDtype,
    "pandas" "UInt64Dtype" => MaskedDtype,
    "pandas" "BooleanDtype" => MaskedDtype,
    "pandas" "Float32Dtype" => MaskedDtype,
    "pandas" "Float64Dtype" => MaskedDtype,
    "pandas.core.arrays.datetimes" "DatetimeArray" => DatetimeArray,
    "pandas.arrays" "DatetimeArray" => DatetimeArray,
    "pandas.core.arrays.timedeltas" "TimedeltaArray" => TimedeltaArray,
    "pandas.arrays" "TimedeltaArray" => TimedeltaArray,
    "pandas.core.dtypes.dtypes" "DatetimeTZDtype" => DatetimeTZDtype,
    "pandas" "DatetimeTZDtype" => DatetimeTZDtype,
    "pandas.core.arrays.string_" "StringArray" => StringArray,
    "pandas.arrays" "StringArray" => StringArray,
    "pandas.core.arrays.string_" "StringArrayNumpySemantics" => StringArray,
    "pandas.core.arrays.string_" "StringDtype" => StringDtype,
    "pandas" "StringDtype" => StringDtype,
    "pandas.core.arrays.string_arrow" "ArrowStringArray" => ArrowStringArray,
    "pandas.core.arrays.string_arrow" "ArrowStringArrayNumpySemantics" => ArrowStringArray,
    "pandas.arrays" "ArrowStringArray" => ArrowStringArray,
    "pandas.arrays" "ArrowStringArrayNumpySemantics" => ArrowStringArray,
    "pandas.core.arrays.arrow.array" "ArrowExtensionArray" => ArrowStringArray,
    "pandas.arrays" "ArrowExtensionArray" => ArrowStringArray,
    "pandas.core.dtypes.dtypes" "ArrowDtype" => ArrowDtype,
    "pandas" "ArrowDtype" => ArrowDtype,
    "pandas._libs.missing" "NA" => PandasNA,
    "pandas" "NA" => PandasNA,
    "pandas._libs.tslibs.nattype" "__nat_unpickle" => NaT,

    // pyarrow (pandas 3 string columns, string[pyarrow])
    "pyarrow.lib" "_restore_array" => PaRestoreArray,
    "pyarrow.lib" "type_for_alias" => PaTypeForAlias,
    "pyarrow.lib" "py_buffer" => PaPyBuffer,
    "pyarrow.lib" "chunked_array" => PaChunkedArray,

    // Python built-ins, Python 3 and Python 2 spellings
    "builtins" "slice" => Slice,
    "__builtin__" "slice" => Slice,
    "_codecs" "encode" => CodecsEncode,
    "copyreg" "_reconstructor" => CopyregReconstructor,
    "copy_reg" "_reconstructor" => CopyregReconstructor,
    "copyreg" "__newobj__" => CopyregNewObj,
    "copy_reg" "__newobj__" => CopyregNewObj,
    "builtins" "object" => Object,
    "__builtin__" "object" => Object,
    "collections" "OrderedDict" => OrderedDict,
    "builtins" "set" => Set,
    "__builtin__" "set" => Set,
    "builtins" "frozenset" => FrozenSet,
    "__builtin__" "frozenset" => FrozenSet,
    "builtins" "bytearray" => ByteArray,
    "__builtin__" "bytearray" => ByteArray,
    "builtins" "bytes" => Bytes,
    "__builtin__" "bytes" => Bytes,
    "builtins" "list" => List,
    "__builtin__" "list" => List,
    "builtins" "tuple" => Tuple,
    "__builtin__" "tuple" => Tuple,
    "builtins" "dict" => Dict,
    "__builtin__" "dict" => Dict,
    "builtins" "complex" => Builtin,
    "__builtin__" "complex" => Builtin,

    // time zones of tz-aware columns
    "datetime" "timezone" => TimeZone,
    "datetime" "timedelta" => TimeZone,
    "pytz" "_UTC" => TimeZone,
    "pytz" "_p" => TimeZone,
    "zoneinfo" "ZoneInfo" => ZoneInfo,
    "zoneinfo" "ZoneInfo._unpickle" => TimeZone,
    "builtins" "getattr" => GetAttr,
    "__builtin__" "getattr" => GetAttr,
}

/// A row of [`TABLE`]. Only [`lookup`] makes one, so [`entry`] always finds
/// its row.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct GlobalId(u16);

/// The row of `module.name` in [`TABLE`], if it is allowed.
pub fn lookup(module: &str, name: &str) -> Option<GlobalId> {
    TABLE
        .iter()
        .position(|a| a.module == module && a.name == name)
        .and_then(|i| u16::try_from(i).ok())
        .map(GlobalId)
}

/// The allowed global `id` names.
pub fn entry(id: GlobalId) -> &'static Allowed {
    // In bounds: `lookup` only makes ids of existing rows, and TABLE is static.
    &TABLE[usize::from(id.0)]
}

impl GlobalId {
    /// What the global stands for.
    pub fn kind(self) -> Kind {
        entry(self).kind
    }
}
