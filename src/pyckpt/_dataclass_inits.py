"""__init__ templates of the dataclass shapes of pyckpt's modules (pyckpt/_dataclass.py).

Written by scripts/dataclass_inits.py: do not edit.  _dataclass._template takes a
shape's code from here (no compiler run in a command) and compiles one not here.
A name says the shape: init_<parameters>_<other fields>[_frozen], r a required
parameter, d one with a default, f one with a default factory or such a field.
"""

from __future__ import annotations  # (as _dataclass.py's compiled ones: same flags)


def init_dddd_(self, _p0=None, _p1=None, _p2=None, _p3=None):
    self._a0 = _p0
    self._a1 = _p1
    self._a2 = _p2
    self._a3 = _p3


def init_ddddddffd_(self, _p0=None, _p1=None, _p2=None, _p3=None, _p4=None, _p5=None, _p6=None, _p7=None, _p8=None):
    self._a0 = _p0
    self._a1 = _p1
    self._a2 = _p2
    self._a3 = _p3
    self._a4 = _p4
    self._a5 = _p5
    self._a6 = _g6() if _p6 is _FACTORY else _p6
    self._a7 = _g7() if _p7 is _FACTORY else _p7
    self._a8 = _p8


def init_dddff_(self, _p0=None, _p1=None, _p2=None, _p3=None, _p4=None):
    self._a0 = _p0
    self._a1 = _p1
    self._a2 = _p2
    self._a3 = _g3() if _p3 is _FACTORY else _p3
    self._a4 = _g4() if _p4 is _FACTORY else _p4


def init_fddddddddfdd_(self, _p0=None, _p1=None, _p2=None, _p3=None, _p4=None, _p5=None, _p6=None, _p7=None, _p8=None, _p9=None, _p10=None, _p11=None):
    self._a0 = _g0() if _p0 is _FACTORY else _p0
    self._a1 = _p1
    self._a2 = _p2
    self._a3 = _p3
    self._a4 = _p4
    self._a5 = _p5
    self._a6 = _p6
    self._a7 = _p7
    self._a8 = _p8
    self._a9 = _g9() if _p9 is _FACTORY else _p9
    self._a10 = _p10
    self._a11 = _p11


def init_fff_(self, _p0=None, _p1=None, _p2=None):
    self._a0 = _g0() if _p0 is _FACTORY else _p0
    self._a1 = _g1() if _p1 is _FACTORY else _p1
    self._a2 = _g2() if _p2 is _FACTORY else _p2


def init_r_(self, _p0):
    self._a0 = _p0


def init_rd_(self, _p0, _p1=None):
    self._a0 = _p0
    self._a1 = _p1


def init_rd__frozen(self, _p0, _p1=None):
    _object_setattr(self, '_a0', _p0)
    _object_setattr(self, '_a1', _p1)


def init_rr_(self, _p0, _p1):
    self._a0 = _p0
    self._a1 = _p1


def init_rr__frozen(self, _p0, _p1):
    _object_setattr(self, '_a0', _p0)
    _object_setattr(self, '_a1', _p1)


def init_rrd_(self, _p0, _p1, _p2=None):
    self._a0 = _p0
    self._a1 = _p1
    self._a2 = _p2


def init_rrdd_(self, _p0, _p1, _p2=None, _p3=None):
    self._a0 = _p0
    self._a1 = _p1
    self._a2 = _p2
    self._a3 = _p3


def init_rrddd_(self, _p0, _p1, _p2=None, _p3=None, _p4=None):
    self._a0 = _p0
    self._a1 = _p1
    self._a2 = _p2
    self._a3 = _p3
    self._a4 = _p4


def init_rrf_(self, _p0, _p1, _p2=None):
    self._a0 = _p0
    self._a1 = _p1
    self._a2 = _g2() if _p2 is _FACTORY else _p2


def init_rrr_(self, _p0, _p1, _p2):
    self._a0 = _p0
    self._a1 = _p1
    self._a2 = _p2


def init_rrr__frozen(self, _p0, _p1, _p2):
    _object_setattr(self, '_a0', _p0)
    _object_setattr(self, '_a1', _p1)
    _object_setattr(self, '_a2', _p2)


def init_rrrdd_(self, _p0, _p1, _p2, _p3=None, _p4=None):
    self._a0 = _p0
    self._a1 = _p1
    self._a2 = _p2
    self._a3 = _p3
    self._a4 = _p4


def init_rrrdddddf_(self, _p0, _p1, _p2, _p3=None, _p4=None, _p5=None, _p6=None, _p7=None, _p8=None):
    self._a0 = _p0
    self._a1 = _p1
    self._a2 = _p2
    self._a3 = _p3
    self._a4 = _p4
    self._a5 = _p5
    self._a6 = _p6
    self._a7 = _p7
    self._a8 = _g8() if _p8 is _FACTORY else _p8


def init_rrrfdfddfdfdfdffdfd_(self, _p0, _p1, _p2, _p3=None, _p4=None, _p5=None, _p6=None, _p7=None, _p8=None, _p9=None, _p10=None, _p11=None, _p12=None, _p13=None, _p14=None, _p15=None, _p16=None, _p17=None, _p18=None):
    self._a0 = _p0
    self._a1 = _p1
    self._a2 = _p2
    self._a3 = _g3() if _p3 is _FACTORY else _p3
    self._a4 = _p4
    self._a5 = _g5() if _p5 is _FACTORY else _p5
    self._a6 = _p6
    self._a7 = _p7
    self._a8 = _g8() if _p8 is _FACTORY else _p8
    self._a9 = _p9
    self._a10 = _g10() if _p10 is _FACTORY else _p10
    self._a11 = _p11
    self._a12 = _g12() if _p12 is _FACTORY else _p12
    self._a13 = _p13
    self._a14 = _g14() if _p14 is _FACTORY else _p14
    self._a15 = _g15() if _p15 is _FACTORY else _p15
    self._a16 = _p16
    self._a17 = _g17() if _p17 is _FACTORY else _p17
    self._a18 = _p18


def init_rrrr_(self, _p0, _p1, _p2, _p3):
    self._a0 = _p0
    self._a1 = _p1
    self._a2 = _p2
    self._a3 = _p3


def init_rrrr__frozen(self, _p0, _p1, _p2, _p3):
    _object_setattr(self, '_a0', _p0)
    _object_setattr(self, '_a1', _p1)
    _object_setattr(self, '_a2', _p2)
    _object_setattr(self, '_a3', _p3)


def init_rrrrddf_(self, _p0, _p1, _p2, _p3, _p4=None, _p5=None, _p6=None):
    self._a0 = _p0
    self._a1 = _p1
    self._a2 = _p2
    self._a3 = _p3
    self._a4 = _p4
    self._a5 = _p5
    self._a6 = _g6() if _p6 is _FACTORY else _p6


def init_rrrrf__frozen(self, _p0, _p1, _p2, _p3, _p4=None):
    _object_setattr(self, '_a0', _p0)
    _object_setattr(self, '_a1', _p1)
    _object_setattr(self, '_a2', _p2)
    _object_setattr(self, '_a3', _p3)
    _object_setattr(self, '_a4', _g4() if _p4 is _FACTORY else _p4)


def init_rrrrr_(self, _p0, _p1, _p2, _p3, _p4):
    self._a0 = _p0
    self._a1 = _p1
    self._a2 = _p2
    self._a3 = _p3
    self._a4 = _p4


def init_rrrrr__frozen(self, _p0, _p1, _p2, _p3, _p4):
    _object_setattr(self, '_a0', _p0)
    _object_setattr(self, '_a1', _p1)
    _object_setattr(self, '_a2', _p2)
    _object_setattr(self, '_a3', _p3)
    _object_setattr(self, '_a4', _p4)


def init_rrrrrdd_(self, _p0, _p1, _p2, _p3, _p4, _p5=None, _p6=None):
    self._a0 = _p0
    self._a1 = _p1
    self._a2 = _p2
    self._a3 = _p3
    self._a4 = _p4
    self._a5 = _p5
    self._a6 = _p6


def init_rrrrrr_(self, _p0, _p1, _p2, _p3, _p4, _p5):
    self._a0 = _p0
    self._a1 = _p1
    self._a2 = _p2
    self._a3 = _p3
    self._a4 = _p4
    self._a5 = _p5


def init_rrrrrr__frozen(self, _p0, _p1, _p2, _p3, _p4, _p5):
    _object_setattr(self, '_a0', _p0)
    _object_setattr(self, '_a1', _p1)
    _object_setattr(self, '_a2', _p2)
    _object_setattr(self, '_a3', _p3)
    _object_setattr(self, '_a4', _p4)
    _object_setattr(self, '_a5', _p5)


def init_rrrrrrfd_(self, _p0, _p1, _p2, _p3, _p4, _p5, _p6=None, _p7=None):
    self._a0 = _p0
    self._a1 = _p1
    self._a2 = _p2
    self._a3 = _p3
    self._a4 = _p4
    self._a5 = _p5
    self._a6 = _g6() if _p6 is _FACTORY else _p6
    self._a7 = _p7


def init_rrrrrrr_(self, _p0, _p1, _p2, _p3, _p4, _p5, _p6):
    self._a0 = _p0
    self._a1 = _p1
    self._a2 = _p2
    self._a3 = _p3
    self._a4 = _p4
    self._a5 = _p5
    self._a6 = _p6


def init_rrrrrrr__frozen(self, _p0, _p1, _p2, _p3, _p4, _p5, _p6):
    _object_setattr(self, '_a0', _p0)
    _object_setattr(self, '_a1', _p1)
    _object_setattr(self, '_a2', _p2)
    _object_setattr(self, '_a3', _p3)
    _object_setattr(self, '_a4', _p4)
    _object_setattr(self, '_a5', _p5)
    _object_setattr(self, '_a6', _p6)


def init_rrrrrrrr_(self, _p0, _p1, _p2, _p3, _p4, _p5, _p6, _p7):
    self._a0 = _p0
    self._a1 = _p1
    self._a2 = _p2
    self._a3 = _p3
    self._a4 = _p4
    self._a5 = _p5
    self._a6 = _p6
    self._a7 = _p7


def init_rrrrrrrrr_(self, _p0, _p1, _p2, _p3, _p4, _p5, _p6, _p7, _p8):
    self._a0 = _p0
    self._a1 = _p1
    self._a2 = _p2
    self._a3 = _p3
    self._a4 = _p4
    self._a5 = _p5
    self._a6 = _p6
    self._a7 = _p7
    self._a8 = _p8


def init_rrrrrrrrrdfffdff_(self, _p0, _p1, _p2, _p3, _p4, _p5, _p6, _p7, _p8, _p9=None, _p10=None, _p11=None, _p12=None, _p13=None, _p14=None, _p15=None):
    self._a0 = _p0
    self._a1 = _p1
    self._a2 = _p2
    self._a3 = _p3
    self._a4 = _p4
    self._a5 = _p5
    self._a6 = _p6
    self._a7 = _p7
    self._a8 = _p8
    self._a9 = _p9
    self._a10 = _g10() if _p10 is _FACTORY else _p10
    self._a11 = _g11() if _p11 is _FACTORY else _p11
    self._a12 = _g12() if _p12 is _FACTORY else _p12
    self._a13 = _p13
    self._a14 = _g14() if _p14 is _FACTORY else _p14
    self._a15 = _g15() if _p15 is _FACTORY else _p15


def init_rrrrrrrrrr_(self, _p0, _p1, _p2, _p3, _p4, _p5, _p6, _p7, _p8, _p9):
    self._a0 = _p0
    self._a1 = _p1
    self._a2 = _p2
    self._a3 = _p3
    self._a4 = _p4
    self._a5 = _p5
    self._a6 = _p6
    self._a7 = _p7
    self._a8 = _p8
    self._a9 = _p9


def init_rrrrrrrrrr__frozen(self, _p0, _p1, _p2, _p3, _p4, _p5, _p6, _p7, _p8, _p9):
    _object_setattr(self, '_a0', _p0)
    _object_setattr(self, '_a1', _p1)
    _object_setattr(self, '_a2', _p2)
    _object_setattr(self, '_a3', _p3)
    _object_setattr(self, '_a4', _p4)
    _object_setattr(self, '_a5', _p5)
    _object_setattr(self, '_a6', _p6)
    _object_setattr(self, '_a7', _p7)
    _object_setattr(self, '_a8', _p8)
    _object_setattr(self, '_a9', _p9)


def init_rrrrrrrrrrr_(self, _p0, _p1, _p2, _p3, _p4, _p5, _p6, _p7, _p8, _p9, _p10):
    self._a0 = _p0
    self._a1 = _p1
    self._a2 = _p2
    self._a3 = _p3
    self._a4 = _p4
    self._a5 = _p5
    self._a6 = _p6
    self._a7 = _p7
    self._a8 = _p8
    self._a9 = _p9
    self._a10 = _p10


def init_rrrrrrrrrrrdfddddddddfdddd_(self, _p0, _p1, _p2, _p3, _p4, _p5, _p6, _p7, _p8, _p9, _p10, _p11=None, _p12=None, _p13=None, _p14=None, _p15=None, _p16=None, _p17=None, _p18=None, _p19=None, _p20=None, _p21=None, _p22=None, _p23=None, _p24=None, _p25=None):
    self._a0 = _p0
    self._a1 = _p1
    self._a2 = _p2
    self._a3 = _p3
    self._a4 = _p4
    self._a5 = _p5
    self._a6 = _p6
    self._a7 = _p7
    self._a8 = _p8
    self._a9 = _p9
    self._a10 = _p10
    self._a11 = _p11
    self._a12 = _g12() if _p12 is _FACTORY else _p12
    self._a13 = _p13
    self._a14 = _p14
    self._a15 = _p15
    self._a16 = _p16
    self._a17 = _p17
    self._a18 = _p18
    self._a19 = _p19
    self._a20 = _p20
    self._a21 = _g21() if _p21 is _FACTORY else _p21
    self._a22 = _p22
    self._a23 = _p23
    self._a24 = _p24
    self._a25 = _p25


def init_rrrrrrrrrrrfdddd_(self, _p0, _p1, _p2, _p3, _p4, _p5, _p6, _p7, _p8, _p9, _p10, _p11=None, _p12=None, _p13=None, _p14=None, _p15=None):
    self._a0 = _p0
    self._a1 = _p1
    self._a2 = _p2
    self._a3 = _p3
    self._a4 = _p4
    self._a5 = _p5
    self._a6 = _p6
    self._a7 = _p7
    self._a8 = _p8
    self._a9 = _p9
    self._a10 = _p10
    self._a11 = _g11() if _p11 is _FACTORY else _p11
    self._a12 = _p12
    self._a13 = _p13
    self._a14 = _p14
    self._a15 = _p15


def init_rrrrrrrrrrrrr_(self, _p0, _p1, _p2, _p3, _p4, _p5, _p6, _p7, _p8, _p9, _p10, _p11, _p12):
    self._a0 = _p0
    self._a1 = _p1
    self._a2 = _p2
    self._a3 = _p3
    self._a4 = _p4
    self._a5 = _p5
    self._a6 = _p6
    self._a7 = _p7
    self._a8 = _p8
    self._a9 = _p9
    self._a10 = _p10
    self._a11 = _p11
    self._a12 = _p12


def init_rrrrrrrrrrrrrrddd_(self, _p0, _p1, _p2, _p3, _p4, _p5, _p6, _p7, _p8, _p9, _p10, _p11, _p12, _p13, _p14=None, _p15=None, _p16=None):
    self._a0 = _p0
    self._a1 = _p1
    self._a2 = _p2
    self._a3 = _p3
    self._a4 = _p4
    self._a5 = _p5
    self._a6 = _p6
    self._a7 = _p7
    self._a8 = _p8
    self._a9 = _p9
    self._a10 = _p10
    self._a11 = _p11
    self._a12 = _p12
    self._a13 = _p13
    self._a14 = _p14
    self._a15 = _p15
    self._a16 = _p16


def init_rrrrrrrrrrrrrrf_(self, _p0, _p1, _p2, _p3, _p4, _p5, _p6, _p7, _p8, _p9, _p10, _p11, _p12, _p13, _p14=None):
    self._a0 = _p0
    self._a1 = _p1
    self._a2 = _p2
    self._a3 = _p3
    self._a4 = _p4
    self._a5 = _p5
    self._a6 = _p6
    self._a7 = _p7
    self._a8 = _p8
    self._a9 = _p9
    self._a10 = _p10
    self._a11 = _p11
    self._a12 = _p12
    self._a13 = _p13
    self._a14 = _g14() if _p14 is _FACTORY else _p14


def init_rrrrrrrrrrrrrrr_(self, _p0, _p1, _p2, _p3, _p4, _p5, _p6, _p7, _p8, _p9, _p10, _p11, _p12, _p13, _p14):
    self._a0 = _p0
    self._a1 = _p1
    self._a2 = _p2
    self._a3 = _p3
    self._a4 = _p4
    self._a5 = _p5
    self._a6 = _p6
    self._a7 = _p7
    self._a8 = _p8
    self._a9 = _p9
    self._a10 = _p10
    self._a11 = _p11
    self._a12 = _p12
    self._a13 = _p13
    self._a14 = _p14


def init_rrrrrrrrrrrrrrrrrdddd_(self, _p0, _p1, _p2, _p3, _p4, _p5, _p6, _p7, _p8, _p9, _p10, _p11, _p12, _p13, _p14, _p15, _p16, _p17=None, _p18=None, _p19=None, _p20=None):
    self._a0 = _p0
    self._a1 = _p1
    self._a2 = _p2
    self._a3 = _p3
    self._a4 = _p4
    self._a5 = _p5
    self._a6 = _p6
    self._a7 = _p7
    self._a8 = _p8
    self._a9 = _p9
    self._a10 = _p10
    self._a11 = _p11
    self._a12 = _p12
    self._a13 = _p13
    self._a14 = _p14
    self._a15 = _p15
    self._a16 = _p16
    self._a17 = _p17
    self._a18 = _p18
    self._a19 = _p19
    self._a20 = _p20


def init_rrrrrrrrrrrrrrrrrrrdddd__frozen(self, _p0, _p1, _p2, _p3, _p4, _p5, _p6, _p7, _p8, _p9, _p10, _p11, _p12, _p13, _p14, _p15, _p16, _p17, _p18, _p19=None, _p20=None, _p21=None, _p22=None):
    _object_setattr(self, '_a0', _p0)
    _object_setattr(self, '_a1', _p1)
    _object_setattr(self, '_a2', _p2)
    _object_setattr(self, '_a3', _p3)
    _object_setattr(self, '_a4', _p4)
    _object_setattr(self, '_a5', _p5)
    _object_setattr(self, '_a6', _p6)
    _object_setattr(self, '_a7', _p7)
    _object_setattr(self, '_a8', _p8)
    _object_setattr(self, '_a9', _p9)
    _object_setattr(self, '_a10', _p10)
    _object_setattr(self, '_a11', _p11)
    _object_setattr(self, '_a12', _p12)
    _object_setattr(self, '_a13', _p13)
    _object_setattr(self, '_a14', _p14)
    _object_setattr(self, '_a15', _p15)
    _object_setattr(self, '_a16', _p16)
    _object_setattr(self, '_a17', _p17)
    _object_setattr(self, '_a18', _p18)
    _object_setattr(self, '_a19', _p19)
    _object_setattr(self, '_a20', _p20)
    _object_setattr(self, '_a21', _p21)
    _object_setattr(self, '_a22', _p22)


def init_rrrrrrrrrrrrrrrrrrrrrrrrrdddddd_(self, _p0, _p1, _p2, _p3, _p4, _p5, _p6, _p7, _p8, _p9, _p10, _p11, _p12, _p13, _p14, _p15, _p16, _p17, _p18, _p19, _p20, _p21, _p22, _p23, _p24, _p25=None, _p26=None, _p27=None, _p28=None, _p29=None, _p30=None):
    self._a0 = _p0
    self._a1 = _p1
    self._a2 = _p2
    self._a3 = _p3
    self._a4 = _p4
    self._a5 = _p5
    self._a6 = _p6
    self._a7 = _p7
    self._a8 = _p8
    self._a9 = _p9
    self._a10 = _p10
    self._a11 = _p11
    self._a12 = _p12
    self._a13 = _p13
    self._a14 = _p14
    self._a15 = _p15
    self._a16 = _p16
    self._a17 = _p17
    self._a18 = _p18
    self._a19 = _p19
    self._a20 = _p20
    self._a21 = _p21
    self._a22 = _p22
    self._a23 = _p23
    self._a24 = _p24
    self._a25 = _p25
    self._a26 = _p26
    self._a27 = _p27
    self._a28 = _p28
    self._a29 = _p29
    self._a30 = _p30
