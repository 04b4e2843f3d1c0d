"""Makers of the fast decoders of pyckpt's record classes (image/codec.py _compiled).

Written by scripts/dataclass_inits.py: do not edit.  A maker is named by the digest
of its source (codec.decoder_name): one written for other fields is never taken.
"""


# pyckpt.image.Header
def make_8f4b1889d9200ad2736b4718f0f478c4(_Bad, _text, NAMESET, cls, new, partial, partial_list, conv0):
    def decode(data):
        if type(data) is not dict:  # (JSON's objects are dicts: a subclass takes the checked way)
            raise _Bad
        if data.keys() != NAMESET:
            return partial(data)
        v = data['format_version']
        if type(v) is not int or not -9223372036854775808 <= v <= 18446744073709551615:
            raise _Bad
        v = data['root_pid']
        if type(v) is not int or not -9223372036854775808 <= v <= 18446744073709551615:
            raise _Bad
        v = data['pyckpt_version']
        if type(v) is not str:
            raise _Bad
        if not v.isascii():
            _text(v)
        v = data['kernel_release']
        if type(v) is not str:
            raise _Bad
        if not v.isascii():
            _text(v)
        v = data['machine']
        if type(v) is not str:
            raise _Bad
        if not v.isascii():
            _text(v)
        v = data['comm']
        if type(v) is not str:
            raise _Bad
        if not v.isascii():
            _text(v)
        if '\0' in v:
            raise _Bad
        c0 = conv0(data['created'])
        kw = dict(data)
        kw['created'] = c0
        obj = new(cls)
        obj.__dict__ = kw
        return obj
    return decode


# pyckpt.image.chain.ParentRecord
def make_0220fc998a726e4fe2729941e4d41909(_Bad, _text, NAMESET, cls, new, partial, partial_list):
    def decode(data):
        if type(data) is not dict:  # (JSON's objects are dicts: a subclass takes the checked way)
            raise _Bad
        if data.keys() != NAMESET:
            return partial(data)
        v = data['records_xxh3']
        if type(v) is not int or not -9223372036854775808 <= v <= 18446744073709551615:
            raise _Bad
        v = data['pages_size']
        if type(v) is not int or not -9223372036854775808 <= v <= 18446744073709551615:
            raise _Bad
        v = data['depth']
        if type(v) is not int or not -9223372036854775808 <= v <= 18446744073709551615:
            raise _Bad
        v = data['path']
        if type(v) is not str:
            raise _Bad
        if not v.isascii():
            _text(v)
        if '\0' in v:
            raise _Bad
        kw = dict(data)
        obj = new(cls)
        obj.__dict__ = kw
        return obj
    return decode


# pyckpt.kinds.cpu.CpuRecord
def make_c9024646a870c42deda346f229ab97c3(_Bad, _text, NAMESET, cls, new, partial, partial_list, conv0, conv1):
    def decode(data):
        if type(data) is not dict:  # (JSON's objects are dicts: a subclass takes the checked way)
            raise _Bad
        if data.keys() != NAMESET:
            return partial(data)
        v = data['tid']
        if type(v) is not int or not -9223372036854775808 <= v <= 18446744073709551615:
            raise _Bad
        c0 = conv0(data['regs'])
        c1 = conv1(data['xstate'])
        kw = dict(data)
        kw['regs'] = c0
        kw['xstate'] = c1
        obj = new(cls)
        obj.__dict__ = kw
        return obj
    return decode


# pyckpt.kinds.creds.CredsRecord
def make_09deec5e72f2909e42b5a4d824faa512(_Bad, _text, NAMESET, cls, new, partial, partial_list, conv0, conv1, conv2):
    def decode(data):
        if type(data) is not dict:  # (JSON's objects are dicts: a subclass takes the checked way)
            raise _Bad
        if data.keys() != NAMESET:
            return partial(data)
        v = data['dumpable']
        if type(v) is not int or not -9223372036854775808 <= v <= 18446744073709551615:
            raise _Bad
        if type(data['no_new_privs']) is not bool:
            raise _Bad
        c0 = conv0(data['uids'])
        c1 = conv1(data['gids'])
        c2 = conv2(data['groups'])
        kw = dict(data)
        kw['uids'] = c0
        kw['gids'] = c1
        kw['groups'] = c2
        obj = new(cls)
        obj.__dict__ = kw
        return obj
    return decode


# pyckpt.kinds.deleted.ContentRun
def make_e6a799758c1ab82687903853eb8eaeb3(_Bad, _text, NAMESET, cls, new, partial, partial_list):
    def decode(data):
        if type(data) is not dict:  # (JSON's objects are dicts: a subclass takes the checked way)
            raise _Bad
        if data.keys() != NAMESET:
            return partial(data)
        v = data['file_offset']
        if type(v) is not int or not -9223372036854775808 <= v <= 18446744073709551615:
            raise _Bad
        v = data['length']
        if type(v) is not int or not -9223372036854775808 <= v <= 18446744073709551615:
            raise _Bad
        v = data['offset']
        if type(v) is not int or not -9223372036854775808 <= v <= 18446744073709551615:
            raise _Bad
        v = data['stored']
        if type(v) is not int or not -9223372036854775808 <= v <= 18446744073709551615:
            raise _Bad
        v = data['xxh3']
        if type(v) is not int or not -9223372036854775808 <= v <= 18446744073709551615:
            raise _Bad
        kw = dict(data)
        obj = new(cls)
        obj.__dict__ = kw
        return obj
    return decode


# pyckpt.kinds.deleted.DeletedContentRecord
def make_ac05aad103d3c34565307a32b26ec37a(_Bad, _text, NAMESET, cls, new, partial, partial_list, conv0):
    def decode(data):
        if type(data) is not dict:  # (JSON's objects are dicts: a subclass takes the checked way)
            raise _Bad
        if data.keys() != NAMESET:
            return partial(data)
        v = data['id']
        if type(v) is not int or not -9223372036854775808 <= v <= 18446744073709551615:
            raise _Bad
        v = data['dev']
        if type(v) is not int or not -9223372036854775808 <= v <= 18446744073709551615:
            raise _Bad
        v = data['ino']
        if type(v) is not int or not -9223372036854775808 <= v <= 18446744073709551615:
            raise _Bad
        v = data['mode']
        if type(v) is not int or not -9223372036854775808 <= v <= 18446744073709551615:
            raise _Bad
        v = data['uid']
        if type(v) is not int or not -9223372036854775808 <= v <= 18446744073709551615:
            raise _Bad
        v = data['gid']
        if type(v) is not int or not -9223372036854775808 <= v <= 18446744073709551615:
            raise _Bad
        v = data['size']
        if type(v) is not int or not -9223372036854775808 <= v <= 18446744073709551615:
            raise _Bad
        v = data['atime_ns']
        if type(v) is not int or not -9223372036854775808 <= v <= 18446744073709551615:
            raise _Bad
        v = data['mtime_ns']
        if type(v) is not int or not -9223372036854775808 <= v <= 18446744073709551615:
            raise _Bad
        v = data['path']
        if type(v) is not str:
            raise _Bad
        if not v.isascii():
            _text(v)
        if '\0' in v:
            raise _Bad
        c0 = conv0(data['runs'])
        kw = dict(data)
        kw['runs'] = c0
        obj = new(cls)
        obj.__dict__ = kw
        return obj
    return decode


# pyckpt.kinds.deleted.DeletedFileRecord
def make_0536a4949f3cd31f6d821f9835de6cf7(_Bad, _text, NAMESET, cls, new, partial, partial_list):
    def decode(data):
        if type(data) is not dict:  # (JSON's objects are dicts: a subclass takes the checked way)
            raise _Bad
        if data.keys() != NAMESET:
            return partial(data)
        v = data['id']
        if type(v) is not int or not -9223372036854775808 <= v <= 18446744073709551615:
            raise _Bad
        v = data['content_id']
        if type(v) is not int or not -9223372036854775808 <= v <= 18446744073709551615:
            raise _Bad
        v = data['flags']
        if type(v) is not int or not -9223372036854775808 <= v <= 18446744073709551615:
            raise _Bad
        v = data['pos']
        if type(v) is not int or not -9223372036854775808 <= v <= 18446744073709551615:
            raise _Bad
        v = data['link']
        if type(v) is not str:
            raise _Bad
        if not v.isascii():
            _text(v)
        kw = dict(data)
        obj = new(cls)
        obj.__dict__ = kw
        return obj
    return decode


# pyckpt.kinds.epoll.EpollItem
def make_034c4b874378959c28ade785b9691599(_Bad, _text, NAMESET, cls, new, partial, partial_list):
    def decode(data):
        if type(data) is not dict:  # (JSON's objects are dicts: a subclass takes the checked way)
            raise _Bad
        if data.keys() != NAMESET:
            return partial(data)
        v = data['tfd']
        if type(v) is not int or not -9223372036854775808 <= v <= 18446744073709551615:
            raise _Bad
        v = data['file_id']
        if type(v) is not int or not -9223372036854775808 <= v <= 18446744073709551615:
            raise _Bad
        v = data['events']
        if type(v) is not int or not -9223372036854775808 <= v <= 18446744073709551615:
            raise _Bad
        v = data['data']
        if type(v) is not int or not -9223372036854775808 <= v <= 18446744073709551615:
            raise _Bad
        kw = dict(data)
        obj = new(cls)
        obj.__dict__ = kw
        return obj
    return decode


# pyckpt.kinds.epoll.EpollItemsRecord
def make_a8f7a4ec9b0d2737f28fa43db2e4fb8f(_Bad, _text, NAMESET, cls, new, partial, partial_list, conv0):
    def decode(data):
        if type(data) is not dict:  # (JSON's objects are dicts: a subclass takes the checked way)
            raise _Bad
        if data.keys() != NAMESET:
            return partial(data)
        v = data['epoll_id']
        if type(v) is not int or not -9223372036854775808 <= v <= 18446744073709551615:
            raise _Bad
        c0 = conv0(data['items'])
        kw = dict(data)
        kw['items'] = c0
        obj = new(cls)
        obj.__dict__ = kw
        return obj
    return decode


# pyckpt.kinds.epoll.EpollRecord
def make_d3dcc5b3d2f04d7ba947076652ff6fcb(_Bad, _text, NAMESET, cls, new, partial, partial_list):
    def decode(data):
        if type(data) is not dict:  # (JSON's objects are dicts: a subclass takes the checked way)
            raise _Bad
        if data.keys() != NAMESET:
            return partial(data)
        v = data['id']
        if type(v) is not int or not -9223372036854775808 <= v <= 18446744073709551615:
            raise _Bad
        v = data['flags']
        if type(v) is not int or not -9223372036854775808 <= v <= 18446744073709551615:
            raise _Bad
        kw = dict(data)
        obj = new(cls)
        obj.__dict__ = kw
        return obj
    return decode


# pyckpt.kinds.eventfds.EventfdRecord
def make_c65f1d7901f067740dfc175231f4a5bd(_Bad, _text, NAMESET, cls, new, partial, partial_list):
    def decode(data):
        if type(data) is not dict:  # (JSON's objects are dicts: a subclass takes the checked way)
            raise _Bad
        if data.keys() != NAMESET:
            return partial(data)
        v = data['id']
        if type(v) is not int or not -9223372036854775808 <= v <= 18446744073709551615:
            raise _Bad
        v = data['flags']
        if type(v) is not int or not -9223372036854775808 <= v <= 18446744073709551615:
            raise _Bad
        v = data['count']
        if type(v) is not int or not -9223372036854775808 <= v <= 18446744073709551615:
            raise _Bad
        if type(data['semaphore']) is not bool:
            raise _Bad
        kw = dict(data)
        obj = new(cls)
        obj.__dict__ = kw
        return obj
    return decode


# pyckpt.kinds.eventfds.SignalfdRecord
def make_b7ea6157753cc8e5cc3adbf8a7308428(_Bad, _text, NAMESET, cls, new, partial, partial_list):
    def decode(data):
        if type(data) is not dict:  # (JSON's objects are dicts: a subclass takes the checked way)
            raise _Bad
        if data.keys() != NAMESET:
            return partial(data)
        v = data['id']
        if type(v) is not int or not -9223372036854775808 <= v <= 18446744073709551615:
            raise _Bad
        v = data['flags']
        if type(v) is not int or not -9223372036854775808 <= v <= 18446744073709551615:
            raise _Bad
        v = data['sigmask']
        if type(v) is not int or not -9223372036854775808 <= v <= 18446744073709551615:
            raise _Bad
        kw = dict(data)
        obj = new(cls)
        obj.__dict__ = kw
        return obj
    return decode


# pyckpt.kinds.eventfds.TimerfdRecord
def make_b8d95cbf03573127e1de6e1681b34a1c(_Bad, _text, NAMESET, cls, new, partial, partial_list):
    def decode(data):
        if type(data) is not dict:  # (JSON's objects are dicts: a subclass takes the checked way)
            raise _Bad
        if data.keys() != NAMESET:
            return partial(data)
        v = data['id']
        if type(v) is not int or not -9223372036854775808 <= v <= 18446744073709551615:
            raise _Bad
        v = data['flags']
        if type(v) is not int or not -9223372036854775808 <= v <= 18446744073709551615:
            raise _Bad
        v = data['clockid']
        if type(v) is not int or not -9223372036854775808 <= v <= 18446744073709551615:
            raise _Bad
        v = data['settime_flags']
        if type(v) is not int or not -9223372036854775808 <= v <= 18446744073709551615:
            raise _Bad
        v = data['value_ns']
        if type(v) is not int or not -9223372036854775808 <= v <= 18446744073709551615:
            raise _Bad
        v = data['interval_ns']
        if type(v) is not int or not -9223372036854775808 <= v <= 18446744073709551615:
            raise _Bad
        v = data['ticks']
        if type(v) is not int or not -9223372036854775808 <= v <= 18446744073709551615:
            raise _Bad
        v = data['clock_ns']
        if type(v) is not int or not -9223372036854775808 <= v <= 18446744073709551615:
            raise _Bad
        kw = dict(data)
        obj = new(cls)
        obj.__dict__ = kw
        return obj
    return decode


# pyckpt.kinds.fileid.FileIdentity
def make_80f9d2b0fb341609532e9fcad8f5c815(_Bad, _text, NAMESET, cls, new, partial, partial_list):
    def decode(data):
        if type(data) is list:
            if len(data) != 5:
                return partial_list(data)
            f0, f1, f2, f3, f4 = data
            v = f1
            if type(v) is not int or not -9223372036854775808 <= v <= 18446744073709551615:
                raise _Bad
            v = f2
            if type(v) is not int or not -9223372036854775808 <= v <= 18446744073709551615:
                raise _Bad
            v = f3
            if type(v) is not int or not -9223372036854775808 <= v <= 18446744073709551615:
                raise _Bad
            v = f4
            if type(v) is not int or not -9223372036854775808 <= v <= 18446744073709551615:
                raise _Bad
            v = f0
            if type(v) is not str:
                raise _Bad
            if not v.isascii():
                _text(v)
            if '\0' in v:
                raise _Bad
            obj = new(cls)
            obj.__dict__ = {'path': f0, 'dev': f1, 'ino': f2, 'size': f3, 'mtime_ns': f4}
            return obj
        if type(data) is not dict:  # (JSON's objects are dicts: a subclass takes the checked way)
            raise _Bad
        if data.keys() != NAMESET:
            return partial(data)
        v = data['dev']
        if type(v) is not int or not -9223372036854775808 <= v <= 18446744073709551615:
            raise _Bad
        v = data['ino']
        if type(v) is not int or not -9223372036854775808 <= v <= 18446744073709551615:
            raise _Bad
        v = data['size']
        if type(v) is not int or not -9223372036854775808 <= v <= 18446744073709551615:
            raise _Bad
        v = data['mtime_ns']
        if type(v) is not int or not -9223372036854775808 <= v <= 18446744073709551615:
            raise _Bad
        v = data['path']
        if type(v) is not str:
            raise _Bad
        if not v.isascii():
            _text(v)
        if '\0' in v:
            raise _Bad
        kw = dict(data)
        obj = new(cls)
        obj.__dict__ = kw
        return obj
    return decode


# pyckpt.kinds.files.ExternalFileRecord
def make_0ff83329bc90d326fa3f076ff202bf24(_Bad, _text, NAMESET, cls, new, partial, partial_list):
    def decode(data):
        if type(data) is not dict:  # (JSON's objects are dicts: a subclass takes the checked way)
            raise _Bad
        if data.keys() != NAMESET:
            return partial(data)
        v = data['id']
        if type(v) is not int or not -9223372036854775808 <= v <= 18446744073709551615:
            raise _Bad
        v = data['flags']
        if type(v) is not int or not -9223372036854775808 <= v <= 18446744073709551615:
            raise _Bad
        v = data['what']
        if type(v) is not str:
            raise _Bad
        if not v.isascii():
            _text(v)
        kw = dict(data)
        obj = new(cls)
        obj.__dict__ = kw
        return obj
    return decode


# pyckpt.kinds.files.FdRecord
def make_e32ac97ed402b57d7c84b2612d0860e7(_Bad, _text, NAMESET, cls, new, partial, partial_list):
    def decode(data):
        if type(data) is not dict:  # (JSON's objects are dicts: a subclass takes the checked way)
            raise _Bad
        if data.keys() != NAMESET:
            return partial(data)
        v = data['fd']
        if type(v) is not int or not -9223372036854775808 <= v <= 18446744073709551615:
            raise _Bad
        v = data['file_id']
        if type(v) is not int or not -9223372036854775808 <= v <= 18446744073709551615:
            raise _Bad
        if type(data['cloexec']) is not bool:
            raise _Bad
        kw = dict(data)
        obj = new(cls)
        obj.__dict__ = kw
        return obj
    return decode


# pyckpt.kinds.inotify.InotifyRecord
def make_fbca7864476c25702f9504a38878dfa1(_Bad, _text, NAMESET, cls, new, partial, partial_list, conv0):
    def decode(data):
        if type(data) is not dict:  # (JSON's objects are dicts: a subclass takes the checked way)
            raise _Bad
        if data.keys() != NAMESET:
            return partial(data)
        v = data['id']
        if type(v) is not int or not -9223372036854775808 <= v <= 18446744073709551615:
            raise _Bad
        v = data['flags']
        if type(v) is not int or not -9223372036854775808 <= v <= 18446744073709551615:
            raise _Bad
        c0 = conv0(data['watches'])
        kw = dict(data)
        kw['watches'] = c0
        obj = new(cls)
        obj.__dict__ = kw
        return obj
    return decode


# pyckpt.kinds.inotify.InotifyWatch
def make_d454ebf9d2c56a915e345a0afe1ee941(_Bad, _text, NAMESET, cls, new, partial, partial_list, conv0):
    def decode(data):
        if type(data) is not dict:  # (JSON's objects are dicts: a subclass takes the checked way)
            raise _Bad
        if data.keys() != NAMESET:
            return partial(data)
        v = data['wd']
        if type(v) is not int or not -9223372036854775808 <= v <= 18446744073709551615:
            raise _Bad
        v = data['mask']
        if type(v) is not int or not -9223372036854775808 <= v <= 18446744073709551615:
            raise _Bad
        v = data['dev']
        if type(v) is not int or not -9223372036854775808 <= v <= 18446744073709551615:
            raise _Bad
        v = data['ino']
        if type(v) is not int or not -9223372036854775808 <= v <= 18446744073709551615:
            raise _Bad
        v = data['handle_type']
        if type(v) is not int or not -9223372036854775808 <= v <= 18446744073709551615:
            raise _Bad
        v = data['path']
        if type(v) is not str:
            raise _Bad
        if not v.isascii():
            _text(v)
        if '\0' in v:
            raise _Bad
        c0 = conv0(data['handle'])
        kw = dict(data)
        kw['handle'] = c0
        obj = new(cls)
        obj.__dict__ = kw
        return obj
    return decode


# pyckpt.kinds.itimers.Itimer
def make_b43d8ea806ebac13f136bb8f0376bd1a(_Bad, _text, NAMESET, cls, new, partial, partial_list):
    def decode(data):
        if type(data) is not dict:  # (JSON's objects are dicts: a subclass takes the checked way)
            raise _Bad
        if data.keys() != NAMESET:
            return partial(data)
        v = data['which']
        if type(v) is not int or not -9223372036854775808 <= v <= 18446744073709551615:
            raise _Bad
        v = data['interval_sec']
        if type(v) is not int or not -9223372036854775808 <= v <= 18446744073709551615:
            raise _Bad
        v = data['interval_usec']
        if type(v) is not int or not -9223372036854775808 <= v <= 18446744073709551615:
            raise _Bad
        v = data['value_sec']
        if type(v) is not int or not -9223372036854775808 <= v <= 18446744073709551615:
            raise _Bad
        v = data['value_usec']
        if type(v) is not int or not -9223372036854775808 <= v <= 18446744073709551615:
            raise _Bad
        kw = dict(data)
        obj = new(cls)
        obj.__dict__ = kw
        return obj
    return decode


# pyckpt.kinds.itimers.ItimersRecord
def make_6217c318ab9f4997db5429f74bf3bdfb(_Bad, _text, NAMESET, cls, new, partial, partial_list, conv0):
    def decode(data):
        if type(data) is not dict:  # (JSON's objects are dicts: a subclass takes the checked way)
            raise _Bad
        if data.keys() != NAMESET:
            return partial(data)
        c0 = conv0(data['timers'])
        kw = dict(data)
        kw['timers'] = c0
        obj = new(cls)
        obj.__dict__ = kw
        return obj
    return decode


# pyckpt.kinds.itimers.PosixTimer
def make_492199e2326f3b1de1d250ffda9716a3(_Bad, _text, NAMESET, cls, new, partial, partial_list):
    def decode(data):
        if type(data) is not dict:  # (JSON's objects are dicts: a subclass takes the checked way)
            raise _Bad
        if data.keys() != NAMESET:
            return partial(data)
        v = data['id']
        if type(v) is not int or not -9223372036854775808 <= v <= 18446744073709551615:
            raise _Bad
        v = data['clock']
        if type(v) is not int or not -9223372036854775808 <= v <= 18446744073709551615:
            raise _Bad
        v = data['notify']
        if type(v) is not int or not -9223372036854775808 <= v <= 18446744073709551615:
            raise _Bad
        v = data['signo']
        if type(v) is not int or not -9223372036854775808 <= v <= 18446744073709551615:
            raise _Bad
        v = data['value']
        if type(v) is not int or not -9223372036854775808 <= v <= 18446744073709551615:
            raise _Bad
        v = data['tid']
        if type(v) is not int or not -9223372036854775808 <= v <= 18446744073709551615:
            raise _Bad
        v = data['interval_sec']
        if type(v) is not int or not -9223372036854775808 <= v <= 18446744073709551615:
            raise _Bad
        v = data['interval_nsec']
        if type(v) is not int or not -9223372036854775808 <= v <= 18446744073709551615:
            raise _Bad
        v = data['value_sec']
        if type(v) is not int or not -9223372036854775808 <= v <= 18446744073709551615:
            raise _Bad
        v = data['value_nsec']
        if type(v) is not int or not -9223372036854775808 <= v <= 18446744073709551615:
            raise _Bad
        kw = dict(data)
        obj = new(cls)
        obj.__dict__ = kw
        return obj
    return decode


# pyckpt.kinds.locks.FileLockRecord
def make_bcdf100b080b316b8c68650cf08f9c00(_Bad, _text, NAMESET, cls, new, partial, partial_list, conv0):
    def decode(data):
        if type(data) is not dict:  # (JSON's objects are dicts: a subclass takes the checked way)
            raise _Bad
        if data.keys() != NAMESET:
            return partial(data)
        v = data['file_id']
        if type(v) is not int or not -9223372036854775808 <= v <= 18446744073709551615:
            raise _Bad
        v = data['fd']
        if type(v) is not int or not -9223372036854775808 <= v <= 18446744073709551615:
            raise _Bad
        v = data['start']
        if type(v) is not int or not -9223372036854775808 <= v <= 18446744073709551615:
            raise _Bad
        v = data['kind']
        if type(v) is not str:
            raise _Bad
        if not v.isascii():
            _text(v)
        v = data['type']
        if type(v) is not str:
            raise _Bad
        if not v.isascii():
            _text(v)
        v = data['path']
        if type(v) is not str:
            raise _Bad
        if not v.isascii():
            _text(v)
        if '\0' in v:
            raise _Bad
        c0 = conv0(data['end'])
        kw = dict(data)
        kw['end'] = c0
        obj = new(cls)
        obj.__dict__ = kw
        return obj
    return decode


# pyckpt.kinds.memfd.MemfdFileRecord
def make_eebe7711cabc05d1c8710bca92960862(_Bad, _text, NAMESET, cls, new, partial, partial_list):
    def decode(data):
        if type(data) is not dict:  # (JSON's objects are dicts: a subclass takes the checked way)
            raise _Bad
        if data.keys() != NAMESET:
            return partial(data)
        v = data['id']
        if type(v) is not int or not -9223372036854775808 <= v <= 18446744073709551615:
            raise _Bad
        v = data['memfd_id']
        if type(v) is not int or not -9223372036854775808 <= v <= 18446744073709551615:
            raise _Bad
        v = data['flags']
        if type(v) is not int or not -9223372036854775808 <= v <= 18446744073709551615:
            raise _Bad
        v = data['pos']
        if type(v) is not int or not -9223372036854775808 <= v <= 18446744073709551615:
            raise _Bad
        v = data['link']
        if type(v) is not str:
            raise _Bad
        if not v.isascii():
            _text(v)
        kw = dict(data)
        obj = new(cls)
        obj.__dict__ = kw
        return obj
    return decode


# pyckpt.kinds.memfd.MemfdRecord
def make_426260232e3339fa54bfa55022730045(_Bad, _text, NAMESET, cls, new, partial, partial_list, conv0):
    def decode(data):
        if type(data) is not dict:  # (JSON's objects are dicts: a subclass takes the checked way)
            raise _Bad
        if data.keys() != NAMESET:
            return partial(data)
        v = data['id']
        if type(v) is not int or not -9223372036854775808 <= v <= 18446744073709551615:
            raise _Bad
        v = data['dev']
        if type(v) is not int or not -9223372036854775808 <= v <= 18446744073709551615:
            raise _Bad
        v = data['ino']
        if type(v) is not int or not -9223372036854775808 <= v <= 18446744073709551615:
            raise _Bad
        v = data['mode']
        if type(v) is not int or not -9223372036854775808 <= v <= 18446744073709551615:
            raise _Bad
        v = data['uid']
        if type(v) is not int or not -9223372036854775808 <= v <= 18446744073709551615:
            raise _Bad
        v = data['gid']
        if type(v) is not int or not -9223372036854775808 <= v <= 18446744073709551615:
            raise _Bad
        v = data['size']
        if type(v) is not int or not -9223372036854775808 <= v <= 18446744073709551615:
            raise _Bad
        v = data['seals']
        if type(v) is not int or not -9223372036854775808 <= v <= 18446744073709551615:
            raise _Bad
        v = data['name']
        if type(v) is not str:
            raise _Bad
        if not v.isascii():
            _text(v)
        if '\0' in v:
            raise _Bad
        if type(data['allow_sealing']) is not bool:
            raise _Bad
        c0 = conv0(data['runs'])
        kw = dict(data)
        kw['runs'] = c0
        obj = new(cls)
        obj.__dict__ = kw
        return obj
    return decode


# pyckpt.kinds.memory.PageRun
def make_a1ad438d540bf2c69d55119f8d35f4af(_Bad, _text, NAMESET, cls, new, partial, partial_list, conv0):
    def decode(data):
        if type(data) is list:
            if len(data) != 7:
                return partial_list(data)
            f0, f1, f2, f3, f4, f5, f6 = data
            v = f0
            if type(v) is not int or not -9223372036854775808 <= v <= 18446744073709551615:
                raise _Bad
            v = f1
            if type(v) is not int or not -9223372036854775808 <= v <= 18446744073709551615:
                raise _Bad
            v = f2
            if type(v) is not int or not -9223372036854775808 <= v <= 18446744073709551615:
                raise _Bad
            v = f3
            if type(v) is not int or not -9223372036854775808 <= v <= 18446744073709551615:
                raise _Bad
            v = f4
            if type(v) is not int or not -9223372036854775808 <= v <= 18446744073709551615:
                raise _Bad
            if type(f5) is not bool:
                raise _Bad
            c0 = conv0(f6)
            obj = new(cls)
            obj.__dict__ = {'addr': f0, 'npages': f1, 'offset': f2, 'xxh3': f3, 'image': f4, 'zero': f5, 'chunks': c0}
            return obj
        if type(data) is not dict:  # (JSON's objects are dicts: a subclass takes the checked way)
            raise _Bad
        if data.keys() != NAMESET:
            return partial(data)
        v = data['addr']
        if type(v) is not int or not -9223372036854775808 <= v <= 18446744073709551615:
            raise _Bad
        v = data['npages']
        if type(v) is not int or not -9223372036854775808 <= v <= 18446744073709551615:
            raise _Bad
        v = data['offset']
        if type(v) is not int or not -9223372036854775808 <= v <= 18446744073709551615:
            raise _Bad
        v = data['xxh3']
        if type(v) is not int or not -9223372036854775808 <= v <= 18446744073709551615:
            raise _Bad
        v = data['image']
        if type(v) is not int or not -9223372036854775808 <= v <= 18446744073709551615:
            raise _Bad
        if type(data['zero']) is not bool:
            raise _Bad
        c0 = conv0(data['chunks'])
        kw = dict(data)
        kw['chunks'] = c0
        obj = new(cls)
        obj.__dict__ = kw
        return obj
    return decode


# pyckpt.kinds.memory.VdsoBlock
def make_abf77cf434f28c01d83c15a06f0f663c(_Bad, _text, NAMESET, cls, new, partial, partial_list):
    def decode(data):
        if type(data) is not dict:  # (JSON's objects are dicts: a subclass takes the checked way)
            raise _Bad
        if data.keys() != NAMESET:
            return partial(data)
        v = data['start']
        if type(v) is not int or not -9223372036854775808 <= v <= 18446744073709551615:
            raise _Bad
        v = data['end']
        if type(v) is not int or not -9223372036854775808 <= v <= 18446744073709551615:
            raise _Bad
        v = data['name']
        if type(v) is not str:
            raise _Bad
        if not v.isascii():
            _text(v)
        if '\0' in v:
            raise _Bad
        kw = dict(data)
        obj = new(cls)
        obj.__dict__ = kw
        return obj
    return decode


# pyckpt.kinds.memory.VdsoRecord
def make_81bb3b74696be2a24ed910ffc5058724(_Bad, _text, NAMESET, cls, new, partial, partial_list, conv0):
    def decode(data):
        if type(data) is not dict:  # (JSON's objects are dicts: a subclass takes the checked way)
            raise _Bad
        if data.keys() != NAMESET:
            return partial(data)
        v = data['vdso_xxh3']
        if type(v) is not int or not -9223372036854775808 <= v <= 18446744073709551615:
            raise _Bad
        c0 = conv0(data['blocks'])
        kw = dict(data)
        kw['blocks'] = c0
        obj = new(cls)
        obj.__dict__ = kw
        return obj
    return decode


# pyckpt.kinds.memory.VmaRecord
def make_f93bcdb776e6a8b185179393523008e0(_Bad, _text, NAMESET, cls, new, partial, partial_list, conv0, conv1, conv2):
    def decode(data):
        if type(data) is list:
            if len(data) != 10:
                return partial_list(data)
            f0, f1, f2, f3, f4, f5, f6, f7, f8, f9 = data
            v = f0
            if type(v) is not int or not -9223372036854775808 <= v <= 18446744073709551615:
                raise _Bad
            v = f1
            if type(v) is not int or not -9223372036854775808 <= v <= 18446744073709551615:
                raise _Bad
            v = f2
            if type(v) is not int or not -9223372036854775808 <= v <= 18446744073709551615:
                raise _Bad
            v = f6
            if type(v) is not int or not -9223372036854775808 <= v <= 18446744073709551615:
                raise _Bad
            v = f4
            if type(v) is not str:
                raise _Bad
            if not v.isascii():
                _text(v)
            v = f5
            if type(v) is not str:
                raise _Bad
            if not v.isascii():
                _text(v)
            if '\0' in v:
                raise _Bad
            if type(f3) is not bool:
                raise _Bad
            c0 = conv0(f7)
            c1 = conv1(f8)
            c2 = conv2(f9)
            obj = new(cls)
            obj.__dict__ = {'start': f0, 'end': f1, 'prot': f2, 'shared': f3, 'kind': f4, 'name': f5, 'offset': f6, 'file': c0, 'vmflags': c1, 'pages': c2}
            return obj
        if type(data) is not dict:  # (JSON's objects are dicts: a subclass takes the checked way)
            raise _Bad
        if data.keys() != NAMESET:
            return partial(data)
        v = data['start']
        if type(v) is not int or not -9223372036854775808 <= v <= 18446744073709551615:
            raise _Bad
        v = data['end']
        if type(v) is not int or not -9223372036854775808 <= v <= 18446744073709551615:
            raise _Bad
        v = data['prot']
        if type(v) is not int or not -9223372036854775808 <= v <= 18446744073709551615:
            raise _Bad
        v = data['offset']
        if type(v) is not int or not -9223372036854775808 <= v <= 18446744073709551615:
            raise _Bad
        v = data['kind']
        if type(v) is not str:
            raise _Bad
        if not v.isascii():
            _text(v)
        v = data['name']
        if type(v) is not str:
            raise _Bad
        if not v.isascii():
            _text(v)
        if '\0' in v:
            raise _Bad
        if type(data['shared']) is not bool:
            raise _Bad
        c0 = conv0(data['file'])
        c1 = conv1(data['vmflags'])
        c2 = conv2(data['pages'])
        kw = dict(data)
        kw['file'] = c0
        kw['vmflags'] = c1
        kw['pages'] = c2
        obj = new(cls)
        obj.__dict__ = kw
        return obj
    return decode


# pyckpt.kinds.mm.MmRecord
def make_66d5d9ac74832cf749bbfd1a97b435bd(_Bad, _text, NAMESET, cls, new, partial, partial_list, conv0, conv1):
    def decode(data):
        if type(data) is not dict:  # (JSON's objects are dicts: a subclass takes the checked way)
            raise _Bad
        if data.keys() != NAMESET:
            return partial(data)
        v = data['start_code']
        if type(v) is not int or not -9223372036854775808 <= v <= 18446744073709551615:
            raise _Bad
        v = data['end_code']
        if type(v) is not int or not -9223372036854775808 <= v <= 18446744073709551615:
            raise _Bad
        v = data['start_data']
        if type(v) is not int or not -9223372036854775808 <= v <= 18446744073709551615:
            raise _Bad
        v = data['end_data']
        if type(v) is not int or not -9223372036854775808 <= v <= 18446744073709551615:
            raise _Bad
        v = data['start_brk']
        if type(v) is not int or not -9223372036854775808 <= v <= 18446744073709551615:
            raise _Bad
        v = data['brk']
        if type(v) is not int or not -9223372036854775808 <= v <= 18446744073709551615:
            raise _Bad
        v = data['start_stack']
        if type(v) is not int or not -9223372036854775808 <= v <= 18446744073709551615:
            raise _Bad
        v = data['arg_start']
        if type(v) is not int or not -9223372036854775808 <= v <= 18446744073709551615:
            raise _Bad
        v = data['arg_end']
        if type(v) is not int or not -9223372036854775808 <= v <= 18446744073709551615:
            raise _Bad
        v = data['env_start']
        if type(v) is not int or not -9223372036854775808 <= v <= 18446744073709551615:
            raise _Bad
        v = data['env_end']
        if type(v) is not int or not -9223372036854775808 <= v <= 18446744073709551615:
            raise _Bad
        c0 = conv0(data['auxv'])
        c1 = conv1(data['exe'])
        kw = dict(data)
        kw['auxv'] = c0
        kw['exe'] = c1
        obj = new(cls)
        obj.__dict__ = kw
        return obj
    return decode


# pyckpt.kinds.pidfd.PidfdRecord
def make_7775c302e2d2006d2d8adae4d74deb68(_Bad, _text, NAMESET, cls, new, partial, partial_list):
    def decode(data):
        if type(data) is not dict:  # (JSON's objects are dicts: a subclass takes the checked way)
            raise _Bad
        if data.keys() != NAMESET:
            return partial(data)
        v = data['id']
        if type(v) is not int or not -9223372036854775808 <= v <= 18446744073709551615:
            raise _Bad
        v = data['pid']
        if type(v) is not int or not -9223372036854775808 <= v <= 18446744073709551615:
            raise _Bad
        v = data['flags']
        if type(v) is not int or not -9223372036854775808 <= v <= 18446744073709551615:
            raise _Bad
        kw = dict(data)
        obj = new(cls)
        obj.__dict__ = kw
        return obj
    return decode


# pyckpt.kinds.pipes.FifoRecord
def make_f82bb07c54363ad0041a39acc43e782e(_Bad, _text, NAMESET, cls, new, partial, partial_list, conv0):
    def decode(data):
        if type(data) is not dict:  # (JSON's objects are dicts: a subclass takes the checked way)
            raise _Bad
        if data.keys() != NAMESET:
            return partial(data)
        v = data['id']
        if type(v) is not int or not -9223372036854775808 <= v <= 18446744073709551615:
            raise _Bad
        v = data['pipe_id']
        if type(v) is not int or not -9223372036854775808 <= v <= 18446744073709551615:
            raise _Bad
        v = data['flags']
        if type(v) is not int or not -9223372036854775808 <= v <= 18446744073709551615:
            raise _Bad
        v = data['unread']
        if type(v) is not int or not -9223372036854775808 <= v <= 18446744073709551615:
            raise _Bad
        c0 = conv0(data['file'])
        kw = dict(data)
        kw['file'] = c0
        obj = new(cls)
        obj.__dict__ = kw
        return obj
    return decode


# pyckpt.kinds.pipes.PipeEndRecord
def make_1b2a16956be3ba284260757e849cdacf(_Bad, _text, NAMESET, cls, new, partial, partial_list):
    def decode(data):
        if type(data) is not dict:  # (JSON's objects are dicts: a subclass takes the checked way)
            raise _Bad
        if data.keys() != NAMESET:
            return partial(data)
        v = data['id']
        if type(v) is not int or not -9223372036854775808 <= v <= 18446744073709551615:
            raise _Bad
        v = data['pipe_id']
        if type(v) is not int or not -9223372036854775808 <= v <= 18446744073709551615:
            raise _Bad
        v = data['flags']
        if type(v) is not int or not -9223372036854775808 <= v <= 18446744073709551615:
            raise _Bad
        v = data['ino']
        if type(v) is not int or not -9223372036854775808 <= v <= 18446744073709551615:
            raise _Bad
        v = data['unread']
        if type(v) is not int or not -9223372036854775808 <= v <= 18446744073709551615:
            raise _Bad
        kw = dict(data)
        obj = new(cls)
        obj.__dict__ = kw
        return obj
    return decode


# pyckpt.kinds.pipes.PipeRecord
def make_712251ee0622e46b90c912407a2b13e1(_Bad, _text, NAMESET, cls, new, partial, partial_list, conv0, conv1):
    def decode(data):
        if type(data) is not dict:  # (JSON's objects are dicts: a subclass takes the checked way)
            raise _Bad
        if data.keys() != NAMESET:
            return partial(data)
        v = data['id']
        if type(v) is not int or not -9223372036854775808 <= v <= 18446744073709551615:
            raise _Bad
        v = data['ino']
        if type(v) is not int or not -9223372036854775808 <= v <= 18446744073709551615:
            raise _Bad
        v = data['size']
        if type(v) is not int or not -9223372036854775808 <= v <= 18446744073709551615:
            raise _Bad
        v = data['length']
        if type(v) is not int or not -9223372036854775808 <= v <= 18446744073709551615:
            raise _Bad
        v = data['offset']
        if type(v) is not int or not -9223372036854775808 <= v <= 18446744073709551615:
            raise _Bad
        v = data['xxh3']
        if type(v) is not int or not -9223372036854775808 <= v <= 18446744073709551615:
            raise _Bad
        c0 = conv0(data['packets'])
        c1 = conv1(data['fifo'])
        kw = dict(data)
        kw['packets'] = c0
        kw['fifo'] = c1
        obj = new(cls)
        obj.__dict__ = kw
        return obj
    return decode


# pyckpt.kinds.regfile.FileRecord
def make_a42c995ba508b0c6c314b1b7759594af(_Bad, _text, NAMESET, cls, new, partial, partial_list, conv0, conv1):
    def decode(data):
        if type(data) is not dict:  # (JSON's objects are dicts: a subclass takes the checked way)
            raise _Bad
        if data.keys() != NAMESET:
            return partial(data)
        v = data['id']
        if type(v) is not int or not -9223372036854775808 <= v <= 18446744073709551615:
            raise _Bad
        v = data['flags']
        if type(v) is not int or not -9223372036854775808 <= v <= 18446744073709551615:
            raise _Bad
        v = data['pos']
        if type(v) is not int or not -9223372036854775808 <= v <= 18446744073709551615:
            raise _Bad
        v = data['handle_type']
        if type(v) is not int or not -9223372036854775808 <= v <= 18446744073709551615:
            raise _Bad
        v = data['kind']
        if type(v) is not str:
            raise _Bad
        if not v.isascii():
            _text(v)
        c0 = conv0(data['file'])
        c1 = conv1(data['handle'])
        kw = dict(data)
        kw['file'] = c0
        kw['handle'] = c1
        obj = new(cls)
        obj.__dict__ = kw
        return obj
    return decode


# pyckpt.kinds.shmem.ShmemRecord
def make_924776259c376d188949c6915de585b8(_Bad, _text, NAMESET, cls, new, partial, partial_list, conv0):
    def decode(data):
        if type(data) is not dict:  # (JSON's objects are dicts: a subclass takes the checked way)
            raise _Bad
        if data.keys() != NAMESET:
            return partial(data)
        v = data['id']
        if type(v) is not int or not -9223372036854775808 <= v <= 18446744073709551615:
            raise _Bad
        v = data['dev']
        if type(v) is not int or not -9223372036854775808 <= v <= 18446744073709551615:
            raise _Bad
        v = data['ino']
        if type(v) is not int or not -9223372036854775808 <= v <= 18446744073709551615:
            raise _Bad
        v = data['size']
        if type(v) is not int or not -9223372036854775808 <= v <= 18446744073709551615:
            raise _Bad
        c0 = conv0(data['runs'])
        kw = dict(data)
        kw['runs'] = c0
        obj = new(cls)
        obj.__dict__ = kw
        return obj
    return decode


# pyckpt.kinds.signals.PendingSignalsRecord
def make_ec94b632e4256a8cb679deb25136be46(_Bad, _text, NAMESET, cls, new, partial, partial_list, conv0):
    def decode(data):
        if type(data) is not dict:  # (JSON's objects are dicts: a subclass takes the checked way)
            raise _Bad
        if data.keys() != NAMESET:
            return partial(data)
        v = data['tid']
        if type(v) is not int or not -9223372036854775808 <= v <= 18446744073709551615:
            raise _Bad
        c0 = conv0(data['siginfos'])
        kw = dict(data)
        kw['siginfos'] = c0
        obj = new(cls)
        obj.__dict__ = kw
        return obj
    return decode


# pyckpt.kinds.signals.SigAction
def make_c49c0fe3f726be73fd894f8c9e12549b(_Bad, _text, NAMESET, cls, new, partial, partial_list):
    def decode(data):
        if type(data) is not dict:  # (JSON's objects are dicts: a subclass takes the checked way)
            raise _Bad
        if data.keys() != NAMESET:
            return partial(data)
        v = data['signo']
        if type(v) is not int or not -9223372036854775808 <= v <= 18446744073709551615:
            raise _Bad
        v = data['handler']
        if type(v) is not int or not -9223372036854775808 <= v <= 18446744073709551615:
            raise _Bad
        v = data['flags']
        if type(v) is not int or not -9223372036854775808 <= v <= 18446744073709551615:
            raise _Bad
        v = data['restorer']
        if type(v) is not int or not -9223372036854775808 <= v <= 18446744073709551615:
            raise _Bad
        v = data['mask']
        if type(v) is not int or not -9223372036854775808 <= v <= 18446744073709551615:
            raise _Bad
        kw = dict(data)
        obj = new(cls)
        obj.__dict__ = kw
        return obj
    return decode


# pyckpt.kinds.signals.SignalsRecord
def make_371c4784cac5fde3d8fff27312cff33c(_Bad, _text, NAMESET, cls, new, partial, partial_list, conv0):
    def decode(data):
        if type(data) is not dict:  # (JSON's objects are dicts: a subclass takes the checked way)
            raise _Bad
        if data.keys() != NAMESET:
            return partial(data)
        c0 = conv0(data['actions'])
        kw = dict(data)
        kw['actions'] = c0
        obj = new(cls)
        obj.__dict__ = kw
        return obj
    return decode


# pyckpt.kinds.sysvipc.SysvMessage
def make_febf6798fda4081c42272c04b0fd2193(_Bad, _text, NAMESET, cls, new, partial, partial_list):
    def decode(data):
        if type(data) is not dict:  # (JSON's objects are dicts: a subclass takes the checked way)
            raise _Bad
        if data.keys() != NAMESET:
            return partial(data)
        v = data['mtype']
        if type(v) is not int or not -9223372036854775808 <= v <= 18446744073709551615:
            raise _Bad
        v = data['data']
        if type(v) is not str:
            raise _Bad
        if not v.isascii():
            _text(v)
        kw = dict(data)
        obj = new(cls)
        obj.__dict__ = kw
        return obj
    return decode


# pyckpt.kinds.sysvipc.SysvMsgRecord
def make_65befc40156670a818e1a17bb83c2fb9(_Bad, _text, NAMESET, cls, new, partial, partial_list, conv0):
    def decode(data):
        if type(data) is not dict:  # (JSON's objects are dicts: a subclass takes the checked way)
            raise _Bad
        if data.keys() != NAMESET:
            return partial(data)
        v = data['id']
        if type(v) is not int or not -9223372036854775808 <= v <= 18446744073709551615:
            raise _Bad
        v = data['msqid']
        if type(v) is not int or not -9223372036854775808 <= v <= 18446744073709551615:
            raise _Bad
        v = data['key']
        if type(v) is not int or not -9223372036854775808 <= v <= 18446744073709551615:
            raise _Bad
        v = data['mode']
        if type(v) is not int or not -9223372036854775808 <= v <= 18446744073709551615:
            raise _Bad
        v = data['uid']
        if type(v) is not int or not -9223372036854775808 <= v <= 18446744073709551615:
            raise _Bad
        v = data['gid']
        if type(v) is not int or not -9223372036854775808 <= v <= 18446744073709551615:
            raise _Bad
        v = data['qbytes']
        if type(v) is not int or not -9223372036854775808 <= v <= 18446744073709551615:
            raise _Bad
        c0 = conv0(data['messages'])
        kw = dict(data)
        kw['messages'] = c0
        obj = new(cls)
        obj.__dict__ = kw
        return obj
    return decode


# pyckpt.kinds.sysvipc.SysvSemRecord
def make_a00912aa7cc218403bd2afe8a53377da(_Bad, _text, NAMESET, cls, new, partial, partial_list, conv0):
    def decode(data):
        if type(data) is not dict:  # (JSON's objects are dicts: a subclass takes the checked way)
            raise _Bad
        if data.keys() != NAMESET:
            return partial(data)
        v = data['id']
        if type(v) is not int or not -9223372036854775808 <= v <= 18446744073709551615:
            raise _Bad
        v = data['semid']
        if type(v) is not int or not -9223372036854775808 <= v <= 18446744073709551615:
            raise _Bad
        v = data['key']
        if type(v) is not int or not -9223372036854775808 <= v <= 18446744073709551615:
            raise _Bad
        v = data['mode']
        if type(v) is not int or not -9223372036854775808 <= v <= 18446744073709551615:
            raise _Bad
        v = data['uid']
        if type(v) is not int or not -9223372036854775808 <= v <= 18446744073709551615:
            raise _Bad
        v = data['gid']
        if type(v) is not int or not -9223372036854775808 <= v <= 18446744073709551615:
            raise _Bad
        c0 = conv0(data['values'])
        kw = dict(data)
        kw['values'] = c0
        obj = new(cls)
        obj.__dict__ = kw
        return obj
    return decode


# pyckpt.kinds.sysvipc.SysvShmRecord
def make_331e482faf8557752ceb81caf1088d93(_Bad, _text, NAMESET, cls, new, partial, partial_list, conv0):
    def decode(data):
        if type(data) is not dict:  # (JSON's objects are dicts: a subclass takes the checked way)
            raise _Bad
        if data.keys() != NAMESET:
            return partial(data)
        v = data['id']
        if type(v) is not int or not -9223372036854775808 <= v <= 18446744073709551615:
            raise _Bad
        v = data['shmid']
        if type(v) is not int or not -9223372036854775808 <= v <= 18446744073709551615:
            raise _Bad
        v = data['key']
        if type(v) is not int or not -9223372036854775808 <= v <= 18446744073709551615:
            raise _Bad
        v = data['mode']
        if type(v) is not int or not -9223372036854775808 <= v <= 18446744073709551615:
            raise _Bad
        v = data['uid']
        if type(v) is not int or not -9223372036854775808 <= v <= 18446744073709551615:
            raise _Bad
        v = data['gid']
        if type(v) is not int or not -9223372036854775808 <= v <= 18446744073709551615:
            raise _Bad
        v = data['cuid']
        if type(v) is not int or not -9223372036854775808 <= v <= 18446744073709551615:
            raise _Bad
        v = data['cgid']
        if type(v) is not int or not -9223372036854775808 <= v <= 18446744073709551615:
            raise _Bad
        v = data['cpid']
        if type(v) is not int or not -9223372036854775808 <= v <= 18446744073709551615:
            raise _Bad
        v = data['size']
        if type(v) is not int or not -9223372036854775808 <= v <= 18446744073709551615:
            raise _Bad
        v = data['dev']
        if type(v) is not int or not -9223372036854775808 <= v <= 18446744073709551615:
            raise _Bad
        v = data['name_key']
        if type(v) is not int or not -9223372036854775808 <= v <= 18446744073709551615:
            raise _Bad
        c0 = conv0(data['runs'])
        kw = dict(data)
        kw['runs'] = c0
        obj = new(cls)
        obj.__dict__ = kw
        return obj
    return decode


# pyckpt.kinds.task.ProcessRecord
def make_6021636fa3ede81d4bb269c2aa506928(_Bad, _text, NAMESET, cls, new, partial, partial_list):
    def decode(data):
        if type(data) is not dict:  # (JSON's objects are dicts: a subclass takes the checked way)
            raise _Bad
        if data.keys() != NAMESET:
            return partial(data)
        v = data['pid']
        if type(v) is not int or not -9223372036854775808 <= v <= 18446744073709551615:
            raise _Bad
        v = data['ppid']
        if type(v) is not int or not -9223372036854775808 <= v <= 18446744073709551615:
            raise _Bad
        kw = dict(data)
        obj = new(cls)
        obj.__dict__ = kw
        return obj
    return decode


# pyckpt.kinds.task.TaskRecord
def make_23f184879b33cc004c6d2dd16ec70c38(_Bad, _text, NAMESET, cls, new, partial, partial_list, conv0):
    def decode(data):
        if type(data) is not dict:  # (JSON's objects are dicts: a subclass takes the checked way)
            raise _Bad
        if data.keys() != NAMESET:
            return partial(data)
        v = data['pid']
        if type(v) is not int or not -9223372036854775808 <= v <= 18446744073709551615:
            raise _Bad
        v = data['ppid']
        if type(v) is not int or not -9223372036854775808 <= v <= 18446744073709551615:
            raise _Bad
        v = data['pgid']
        if type(v) is not int or not -9223372036854775808 <= v <= 18446744073709551615:
            raise _Bad
        v = data['sid']
        if type(v) is not int or not -9223372036854775808 <= v <= 18446744073709551615:
            raise _Bad
        v = data['umask']
        if type(v) is not int or not -9223372036854775808 <= v <= 18446744073709551615:
            raise _Bad
        v = data['personality']
        if type(v) is not int or not -9223372036854775808 <= v <= 18446744073709551615:
            raise _Bad
        v = data['cwd']
        if type(v) is not str:
            raise _Bad
        if not v.isascii():
            _text(v)
        if '\0' in v:
            raise _Bad
        v = data['root']
        if type(v) is not str:
            raise _Bad
        if not v.isascii():
            _text(v)
        if '\0' in v:
            raise _Bad
        c0 = conv0(data['rlimits'])
        kw = dict(data)
        kw['rlimits'] = c0
        obj = new(cls)
        obj.__dict__ = kw
        return obj
    return decode


# pyckpt.kinds.task.ZombieRecord
def make_f6a96afd2720cb115138be31e18ce83f(_Bad, _text, NAMESET, cls, new, partial, partial_list):
    def decode(data):
        if type(data) is not dict:  # (JSON's objects are dicts: a subclass takes the checked way)
            raise _Bad
        if data.keys() != NAMESET:
            return partial(data)
        v = data['pid']
        if type(v) is not int or not -9223372036854775808 <= v <= 18446744073709551615:
            raise _Bad
        v = data['ppid']
        if type(v) is not int or not -9223372036854775808 <= v <= 18446744073709551615:
            raise _Bad
        v = data['status']
        if type(v) is not int or not -9223372036854775808 <= v <= 18446744073709551615:
            raise _Bad
        kw = dict(data)
        obj = new(cls)
        obj.__dict__ = kw
        return obj
    return decode


# pyckpt.kinds.tcp.TcpListenerRecord
def make_aa4e2c0fa0ceb7fe3c80b28800885b0c(_Bad, _text, NAMESET, cls, new, partial, partial_list):
    def decode(data):
        if type(data) is not dict:  # (JSON's objects are dicts: a subclass takes the checked way)
            raise _Bad
        if data.keys() != NAMESET:
            return partial(data)
        v = data['id']
        if type(v) is not int or not -9223372036854775808 <= v <= 18446744073709551615:
            raise _Bad
        v = data['family']
        if type(v) is not int or not -9223372036854775808 <= v <= 18446744073709551615:
            raise _Bad
        v = data['port']
        if type(v) is not int or not -9223372036854775808 <= v <= 18446744073709551615:
            raise _Bad
        v = data['scope']
        if type(v) is not int or not -9223372036854775808 <= v <= 18446744073709551615:
            raise _Bad
        v = data['backlog']
        if type(v) is not int or not -9223372036854775808 <= v <= 18446744073709551615:
            raise _Bad
        v = data['flags']
        if type(v) is not int or not -9223372036854775808 <= v <= 18446744073709551615:
            raise _Bad
        v = data['address']
        if type(v) is not str:
            raise _Bad
        if not v.isascii():
            _text(v)
        if type(data['reuseaddr']) is not bool:
            raise _Bad
        if type(data['reuseport']) is not bool:
            raise _Bad
        if type(data['v6only']) is not bool:
            raise _Bad
        kw = dict(data)
        obj = new(cls)
        obj.__dict__ = kw
        return obj
    return decode


# pyckpt.kinds.tcpconn.TcpConnectionRecord
def make_bafb602c1054d14ebbcf28980fe5d4a2(_Bad, _text, NAMESET, cls, new, partial, partial_list, conv0):
    def decode(data):
        if type(data) is not dict:  # (JSON's objects are dicts: a subclass takes the checked way)
            raise _Bad
        if data.keys() != NAMESET:
            return partial(data)
        v = data['id']
        if type(v) is not int or not -9223372036854775808 <= v <= 18446744073709551615:
            raise _Bad
        v = data['ino']
        if type(v) is not int or not -9223372036854775808 <= v <= 18446744073709551615:
            raise _Bad
        v = data['peer_ino']
        if type(v) is not int or not -9223372036854775808 <= v <= 18446744073709551615:
            raise _Bad
        v = data['family']
        if type(v) is not int or not -9223372036854775808 <= v <= 18446744073709551615:
            raise _Bad
        v = data['local_port']
        if type(v) is not int or not -9223372036854775808 <= v <= 18446744073709551615:
            raise _Bad
        v = data['local_scope']
        if type(v) is not int or not -9223372036854775808 <= v <= 18446744073709551615:
            raise _Bad
        v = data['remote_port']
        if type(v) is not int or not -9223372036854775808 <= v <= 18446744073709551615:
            raise _Bad
        v = data['remote_scope']
        if type(v) is not int or not -9223372036854775808 <= v <= 18446744073709551615:
            raise _Bad
        v = data['flags']
        if type(v) is not int or not -9223372036854775808 <= v <= 18446744073709551615:
            raise _Bad
        v = data['advmss']
        if type(v) is not int or not -9223372036854775808 <= v <= 18446744073709551615:
            raise _Bad
        v = data['options']
        if type(v) is not int or not -9223372036854775808 <= v <= 18446744073709551615:
            raise _Bad
        v = data['snd_wscale']
        if type(v) is not int or not -9223372036854775808 <= v <= 18446744073709551615:
            raise _Bad
        v = data['rcv_wscale']
        if type(v) is not int or not -9223372036854775808 <= v <= 18446744073709551615:
            raise _Bad
        v = data['length']
        if type(v) is not int or not -9223372036854775808 <= v <= 18446744073709551615:
            raise _Bad
        v = data['offset']
        if type(v) is not int or not -9223372036854775808 <= v <= 18446744073709551615:
            raise _Bad
        v = data['xxh3']
        if type(v) is not int or not -9223372036854775808 <= v <= 18446744073709551615:
            raise _Bad
        v = data['local_address']
        if type(v) is not str:
            raise _Bad
        if not v.isascii():
            _text(v)
        v = data['remote_address']
        if type(v) is not str:
            raise _Bad
        if not v.isascii():
            _text(v)
        if type(data['nodelay']) is not bool:
            raise _Bad
        if type(data['reuseaddr']) is not bool:
            raise _Bad
        c0 = conv0(data['keepalive'])
        kw = dict(data)
        kw['keepalive'] = c0
        obj = new(cls)
        obj.__dict__ = kw
        return obj
    return decode


# pyckpt.kinds.tcpconn.TcpOutsideRecord
def make_58edf3c26bcbd6dc9704f60834ddac4e(_Bad, _text, NAMESET, cls, new, partial, partial_list, conv0, conv1, conv2):
    def decode(data):
        if type(data) is not dict:  # (JSON's objects are dicts: a subclass takes the checked way)
            raise _Bad
        if data.keys() != NAMESET:
            return partial(data)
        v = data['id']
        if type(v) is not int or not -9223372036854775808 <= v <= 18446744073709551615:
            raise _Bad
        v = data['ino']
        if type(v) is not int or not -9223372036854775808 <= v <= 18446744073709551615:
            raise _Bad
        v = data['state']
        if type(v) is not int or not -9223372036854775808 <= v <= 18446744073709551615:
            raise _Bad
        v = data['family']
        if type(v) is not int or not -9223372036854775808 <= v <= 18446744073709551615:
            raise _Bad
        v = data['local_port']
        if type(v) is not int or not -9223372036854775808 <= v <= 18446744073709551615:
            raise _Bad
        v = data['local_scope']
        if type(v) is not int or not -9223372036854775808 <= v <= 18446744073709551615:
            raise _Bad
        v = data['remote_port']
        if type(v) is not int or not -9223372036854775808 <= v <= 18446744073709551615:
            raise _Bad
        v = data['remote_scope']
        if type(v) is not int or not -9223372036854775808 <= v <= 18446744073709551615:
            raise _Bad
        v = data['flags']
        if type(v) is not int or not -9223372036854775808 <= v <= 18446744073709551615:
            raise _Bad
        v = data['advmss']
        if type(v) is not int or not -9223372036854775808 <= v <= 18446744073709551615:
            raise _Bad
        v = data['options']
        if type(v) is not int or not -9223372036854775808 <= v <= 18446744073709551615:
            raise _Bad
        v = data['snd_wscale']
        if type(v) is not int or not -9223372036854775808 <= v <= 18446744073709551615:
            raise _Bad
        v = data['rcv_wscale']
        if type(v) is not int or not -9223372036854775808 <= v <= 18446744073709551615:
            raise _Bad
        v = data['mss']
        if type(v) is not int or not -9223372036854775808 <= v <= 18446744073709551615:
            raise _Bad
        v = data['snd_seq']
        if type(v) is not int or not -9223372036854775808 <= v <= 18446744073709551615:
            raise _Bad
        v = data['rcv_seq']
        if type(v) is not int or not -9223372036854775808 <= v <= 18446744073709551615:
            raise _Bad
        v = data['timestamp']
        if type(v) is not int or not -9223372036854775808 <= v <= 18446744073709551615:
            raise _Bad
        v = data['unsent']
        if type(v) is not int or not -9223372036854775808 <= v <= 18446744073709551615:
            raise _Bad
        v = data['length']
        if type(v) is not int or not -9223372036854775808 <= v <= 18446744073709551615:
            raise _Bad
        v = data['offset']
        if type(v) is not int or not -9223372036854775808 <= v <= 18446744073709551615:
            raise _Bad
        v = data['xxh3']
        if type(v) is not int or not -9223372036854775808 <= v <= 18446744073709551615:
            raise _Bad
        v = data['sent_length']
        if type(v) is not int or not -9223372036854775808 <= v <= 18446744073709551615:
            raise _Bad
        v = data['sent_offset']
        if type(v) is not int or not -9223372036854775808 <= v <= 18446744073709551615:
            raise _Bad
        v = data['sent_xxh3']
        if type(v) is not int or not -9223372036854775808 <= v <= 18446744073709551615:
            raise _Bad
        v = data['local_address']
        if type(v) is not str:
            raise _Bad
        if not v.isascii():
            _text(v)
        v = data['remote_address']
        if type(v) is not str:
            raise _Bad
        if not v.isascii():
            _text(v)
        if type(data['nodelay']) is not bool:
            raise _Bad
        if type(data['reuseaddr']) is not bool:
            raise _Bad
        c0 = conv0(data['keepalive'])
        c1 = conv1(data['linger'])
        c2 = conv2(data['window'])
        kw = dict(data)
        kw['keepalive'] = c0
        kw['linger'] = c1
        kw['window'] = c2
        obj = new(cls)
        obj.__dict__ = kw
        return obj
    return decode


# pyckpt.kinds.thread.AltStack
def make_230593a12ddfd62531b31212cc7ed035(_Bad, _text, NAMESET, cls, new, partial, partial_list):
    def decode(data):
        if type(data) is not dict:  # (JSON's objects are dicts: a subclass takes the checked way)
            raise _Bad
        if data.keys() != NAMESET:
            return partial(data)
        v = data['sp']
        if type(v) is not int or not -9223372036854775808 <= v <= 18446744073709551615:
            raise _Bad
        v = data['flags']
        if type(v) is not int or not -9223372036854775808 <= v <= 18446744073709551615:
            raise _Bad
        v = data['size']
        if type(v) is not int or not -9223372036854775808 <= v <= 18446744073709551615:
            raise _Bad
        kw = dict(data)
        obj = new(cls)
        obj.__dict__ = kw
        return obj
    return decode


# pyckpt.kinds.thread.ThreadRecord
def make_a515c8f2417a394b3e65c6ecc81e30cc(_Bad, _text, NAMESET, cls, new, partial, partial_list, conv0, conv1):
    def decode(data):
        if type(data) is not dict:  # (JSON's objects are dicts: a subclass takes the checked way)
            raise _Bad
        if data.keys() != NAMESET:
            return partial(data)
        v = data['tid']
        if type(v) is not int or not -9223372036854775808 <= v <= 18446744073709551615:
            raise _Bad
        v = data['clear_child_tid']
        if type(v) is not int or not -9223372036854775808 <= v <= 18446744073709551615:
            raise _Bad
        v = data['robust_head']
        if type(v) is not int or not -9223372036854775808 <= v <= 18446744073709551615:
            raise _Bad
        v = data['robust_len']
        if type(v) is not int or not -9223372036854775808 <= v <= 18446744073709551615:
            raise _Bad
        v = data['rseq_pointer']
        if type(v) is not int or not -9223372036854775808 <= v <= 18446744073709551615:
            raise _Bad
        v = data['rseq_size']
        if type(v) is not int or not -9223372036854775808 <= v <= 18446744073709551615:
            raise _Bad
        v = data['rseq_signature']
        if type(v) is not int or not -9223372036854775808 <= v <= 18446744073709551615:
            raise _Bad
        v = data['blocked']
        if type(v) is not int or not -9223372036854775808 <= v <= 18446744073709551615:
            raise _Bad
        v = data['policy']
        if type(v) is not int or not -9223372036854775808 <= v <= 18446744073709551615:
            raise _Bad
        v = data['priority']
        if type(v) is not int or not -9223372036854775808 <= v <= 18446744073709551615:
            raise _Bad
        v = data['nice']
        if type(v) is not int or not -9223372036854775808 <= v <= 18446744073709551615:
            raise _Bad
        v = data['pdeathsig']
        if type(v) is not int or not -9223372036854775808 <= v <= 18446744073709551615:
            raise _Bad
        v = data['comm']
        if type(v) is not str:
            raise _Bad
        if not v.isascii():
            _text(v)
        if '\0' in v:
            raise _Bad
        c0 = conv0(data['altstack'])
        c1 = conv1(data['affinity'])
        kw = dict(data)
        kw['altstack'] = c0
        kw['affinity'] = c1
        obj = new(cls)
        obj.__dict__ = kw
        return obj
    return decode


# pyckpt.kinds.tty.CttyRecord
def make_31b8ca339699cc2f19400d2f3d0c1d1f(_Bad, _text, NAMESET, cls, new, partial, partial_list):
    def decode(data):
        if type(data) is not dict:  # (JSON's objects are dicts: a subclass takes the checked way)
            raise _Bad
        if data.keys() != NAMESET:
            return partial(data)
        v = data['index']
        if type(v) is not int or not -9223372036854775808 <= v <= 18446744073709551615:
            raise _Bad
        v = data['foreground']
        if type(v) is not int or not -9223372036854775808 <= v <= 18446744073709551615:
            raise _Bad
        v = data['name']
        if type(v) is not str:
            raise _Bad
        if not v.isascii():
            _text(v)
        if '\0' in v:
            raise _Bad
        if type(data['leader']) is not bool:
            raise _Bad
        kw = dict(data)
        obj = new(cls)
        obj.__dict__ = kw
        return obj
    return decode


# pyckpt.kinds.tty.PtyMasterRecord
def make_9ad291ef4d21612635900a8827aee041(_Bad, _text, NAMESET, cls, new, partial, partial_list, conv0, conv1):
    def decode(data):
        if type(data) is not dict:  # (JSON's objects are dicts: a subclass takes the checked way)
            raise _Bad
        if data.keys() != NAMESET:
            return partial(data)
        v = data['id']
        if type(v) is not int or not -9223372036854775808 <= v <= 18446744073709551615:
            raise _Bad
        v = data['flags']
        if type(v) is not int or not -9223372036854775808 <= v <= 18446744073709551615:
            raise _Bad
        v = data['index']
        if type(v) is not int or not -9223372036854775808 <= v <= 18446744073709551615:
            raise _Bad
        v = data['iflag']
        if type(v) is not int or not -9223372036854775808 <= v <= 18446744073709551615:
            raise _Bad
        v = data['oflag']
        if type(v) is not int or not -9223372036854775808 <= v <= 18446744073709551615:
            raise _Bad
        v = data['cflag']
        if type(v) is not int or not -9223372036854775808 <= v <= 18446744073709551615:
            raise _Bad
        v = data['lflag']
        if type(v) is not int or not -9223372036854775808 <= v <= 18446744073709551615:
            raise _Bad
        v = data['ispeed']
        if type(v) is not int or not -9223372036854775808 <= v <= 18446744073709551615:
            raise _Bad
        v = data['ospeed']
        if type(v) is not int or not -9223372036854775808 <= v <= 18446744073709551615:
            raise _Bad
        v = data['queued']
        if type(v) is not int or not -9223372036854775808 <= v <= 18446744073709551615:
            raise _Bad
        v = data['uid']
        if type(v) is not int or not -9223372036854775808 <= v <= 18446744073709551615:
            raise _Bad
        v = data['gid']
        if type(v) is not int or not -9223372036854775808 <= v <= 18446744073709551615:
            raise _Bad
        v = data['mode']
        if type(v) is not int or not -9223372036854775808 <= v <= 18446744073709551615:
            raise _Bad
        if type(data['packet']) is not bool:
            raise _Bad
        if type(data['locked']) is not bool:
            raise _Bad
        c0 = conv0(data['cc'])
        c1 = conv1(data['winsize'])
        kw = dict(data)
        kw['cc'] = c0
        kw['winsize'] = c1
        obj = new(cls)
        obj.__dict__ = kw
        return obj
    return decode


# pyckpt.kinds.tty.PtySlaveRecord
def make_e4548a3f3c9d20dd22097fd5ac1fad7b(_Bad, _text, NAMESET, cls, new, partial, partial_list):
    def decode(data):
        if type(data) is not dict:  # (JSON's objects are dicts: a subclass takes the checked way)
            raise _Bad
        if data.keys() != NAMESET:
            return partial(data)
        v = data['id']
        if type(v) is not int or not -9223372036854775808 <= v <= 18446744073709551615:
            raise _Bad
        v = data['flags']
        if type(v) is not int or not -9223372036854775808 <= v <= 18446744073709551615:
            raise _Bad
        v = data['index']
        if type(v) is not int or not -9223372036854775808 <= v <= 18446744073709551615:
            raise _Bad
        kw = dict(data)
        obj = new(cls)
        obj.__dict__ = kw
        return obj
    return decode


# pyckpt.kinds.udp.UdpMembership
def make_86a8e5b14a7f40786e2986730812aaac(_Bad, _text, NAMESET, cls, new, partial, partial_list, conv0):
    def decode(data):
        if type(data) is not dict:  # (JSON's objects are dicts: a subclass takes the checked way)
            raise _Bad
        if data.keys() != NAMESET:
            return partial(data)
        v = data['group']
        if type(v) is not str:
            raise _Bad
        if not v.isascii():
            _text(v)
        v = data['interface']
        if type(v) is not str:
            raise _Bad
        if not v.isascii():
            _text(v)
        if type(data['exclude']) is not bool:
            raise _Bad
        c0 = conv0(data['sources'])
        kw = dict(data)
        kw['sources'] = c0
        obj = new(cls)
        obj.__dict__ = kw
        return obj
    return decode


# pyckpt.kinds.udp.UdpSocketRecord
def make_7ad64f39c95feb86cfe3fc1a64273e6c(_Bad, _text, NAMESET, cls, new, partial, partial_list, conv0, conv1):
    def decode(data):
        if type(data) is not dict:  # (JSON's objects are dicts: a subclass takes the checked way)
            raise _Bad
        if data.keys() != NAMESET:
            return partial(data)
        v = data['id']
        if type(v) is not int or not -9223372036854775808 <= v <= 18446744073709551615:
            raise _Bad
        v = data['family']
        if type(v) is not int or not -9223372036854775808 <= v <= 18446744073709551615:
            raise _Bad
        v = data['port']
        if type(v) is not int or not -9223372036854775808 <= v <= 18446744073709551615:
            raise _Bad
        v = data['scope']
        if type(v) is not int or not -9223372036854775808 <= v <= 18446744073709551615:
            raise _Bad
        v = data['peer_port']
        if type(v) is not int or not -9223372036854775808 <= v <= 18446744073709551615:
            raise _Bad
        v = data['peer_scope']
        if type(v) is not int or not -9223372036854775808 <= v <= 18446744073709551615:
            raise _Bad
        v = data['flags']
        if type(v) is not int or not -9223372036854775808 <= v <= 18446744073709551615:
            raise _Bad
        v = data['rcvbuf']
        if type(v) is not int or not -9223372036854775808 <= v <= 18446744073709551615:
            raise _Bad
        v = data['sndbuf']
        if type(v) is not int or not -9223372036854775808 <= v <= 18446744073709551615:
            raise _Bad
        v = data['queued']
        if type(v) is not int or not -9223372036854775808 <= v <= 18446744073709551615:
            raise _Bad
        v = data['queued_bytes']
        if type(v) is not int or not -9223372036854775808 <= v <= 18446744073709551615:
            raise _Bad
        v = data['address']
        if type(v) is not str:
            raise _Bad
        if not v.isascii():
            _text(v)
        v = data['peer_address']
        if type(v) is not str:
            raise _Bad
        if not v.isascii():
            _text(v)
        c0 = conv0(data['options'])
        c1 = conv1(data['memberships'])
        kw = dict(data)
        kw['options'] = c0
        kw['memberships'] = c1
        obj = new(cls)
        obj.__dict__ = kw
        return obj
    return decode


# pyckpt.kinds.unix.Message
def make_1e8573bc9d1030ac24e2bd6f050ee870(_Bad, _text, NAMESET, cls, new, partial, partial_list):
    def decode(data):
        if type(data) is not dict:  # (JSON's objects are dicts: a subclass takes the checked way)
            raise _Bad
        if data.keys() != NAMESET:
            return partial(data)
        v = data['length']
        if type(v) is not int or not -9223372036854775808 <= v <= 18446744073709551615:
            raise _Bad
        kw = dict(data)
        obj = new(cls)
        obj.__dict__ = kw
        return obj
    return decode


# pyckpt.kinds.unix.UnixSocketRecord
def make_68f522d741740070ed7745bb2dd2f055(_Bad, _text, NAMESET, cls, new, partial, partial_list, conv0):
    def decode(data):
        if type(data) is not dict:  # (JSON's objects are dicts: a subclass takes the checked way)
            raise _Bad
        if data.keys() != NAMESET:
            return partial(data)
        v = data['id']
        if type(v) is not int or not -9223372036854775808 <= v <= 18446744073709551615:
            raise _Bad
        v = data['ino']
        if type(v) is not int or not -9223372036854775808 <= v <= 18446744073709551615:
            raise _Bad
        v = data['type']
        if type(v) is not int or not -9223372036854775808 <= v <= 18446744073709551615:
            raise _Bad
        v = data['peer_ino']
        if type(v) is not int or not -9223372036854775808 <= v <= 18446744073709551615:
            raise _Bad
        v = data['flags']
        if type(v) is not int or not -9223372036854775808 <= v <= 18446744073709551615:
            raise _Bad
        v = data['shutdown']
        if type(v) is not int or not -9223372036854775808 <= v <= 18446744073709551615:
            raise _Bad
        v = data['sndbuf']
        if type(v) is not int or not -9223372036854775808 <= v <= 18446744073709551615:
            raise _Bad
        v = data['rcvbuf']
        if type(v) is not int or not -9223372036854775808 <= v <= 18446744073709551615:
            raise _Bad
        v = data['peek_off']
        if type(v) is not int or not -9223372036854775808 <= v <= 18446744073709551615:
            raise _Bad
        v = data['length']
        if type(v) is not int or not -9223372036854775808 <= v <= 18446744073709551615:
            raise _Bad
        v = data['offset']
        if type(v) is not int or not -9223372036854775808 <= v <= 18446744073709551615:
            raise _Bad
        v = data['xxh3']
        if type(v) is not int or not -9223372036854775808 <= v <= 18446744073709551615:
            raise _Bad
        v = data['connect_to']
        if type(v) is not str:
            raise _Bad
        if not v.isascii():
            _text(v)
        if type(data['orphan']) is not bool:
            raise _Bad
        if type(data['passcred']) is not bool:
            raise _Bad
        c0 = conv0(data['messages'])
        kw = dict(data)
        kw['messages'] = c0
        obj = new(cls)
        obj.__dict__ = kw
        return obj
    return decode


# pyckpt.kinds.unixname.UnixNamedRecord
def make_fce5825144c7f2377ad25f4d545c6cd9(_Bad, _text, NAMESET, cls, new, partial, partial_list, conv0, conv1, conv2, conv3):
    def decode(data):
        if type(data) is not dict:  # (JSON's objects are dicts: a subclass takes the checked way)
            raise _Bad
        if data.keys() != NAMESET:
            return partial(data)
        v = data['id']
        if type(v) is not int or not -9223372036854775808 <= v <= 18446744073709551615:
            raise _Bad
        v = data['ino']
        if type(v) is not int or not -9223372036854775808 <= v <= 18446744073709551615:
            raise _Bad
        v = data['type']
        if type(v) is not int or not -9223372036854775808 <= v <= 18446744073709551615:
            raise _Bad
        v = data['flags']
        if type(v) is not int or not -9223372036854775808 <= v <= 18446744073709551615:
            raise _Bad
        v = data['shutdown']
        if type(v) is not int or not -9223372036854775808 <= v <= 18446744073709551615:
            raise _Bad
        v = data['sndbuf']
        if type(v) is not int or not -9223372036854775808 <= v <= 18446744073709551615:
            raise _Bad
        v = data['rcvbuf']
        if type(v) is not int or not -9223372036854775808 <= v <= 18446744073709551615:
            raise _Bad
        v = data['peek_off']
        if type(v) is not int or not -9223372036854775808 <= v <= 18446744073709551615:
            raise _Bad
        v = data['backlog']
        if type(v) is not int or not -9223372036854775808 <= v <= 18446744073709551615:
            raise _Bad
        v = data['peer_ino']
        if type(v) is not int or not -9223372036854775808 <= v <= 18446744073709551615:
            raise _Bad
        v = data['listener_ino']
        if type(v) is not int or not -9223372036854775808 <= v <= 18446744073709551615:
            raise _Bad
        v = data['file_mode']
        if type(v) is not int or not -9223372036854775808 <= v <= 18446744073709551615:
            raise _Bad
        v = data['file_uid']
        if type(v) is not int or not -9223372036854775808 <= v <= 18446744073709551615:
            raise _Bad
        v = data['file_gid']
        if type(v) is not int or not -9223372036854775808 <= v <= 18446744073709551615:
            raise _Bad
        v = data['length']
        if type(v) is not int or not -9223372036854775808 <= v <= 18446744073709551615:
            raise _Bad
        v = data['offset']
        if type(v) is not int or not -9223372036854775808 <= v <= 18446744073709551615:
            raise _Bad
        v = data['xxh3']
        if type(v) is not int or not -9223372036854775808 <= v <= 18446744073709551615:
            raise _Bad
        v = data['dropped']
        if type(v) is not int or not -9223372036854775808 <= v <= 18446744073709551615:
            raise _Bad
        v = data['role']
        if type(v) is not str:
            raise _Bad
        if not v.isascii():
            _text(v)
        if type(data['passcred']) is not bool:
            raise _Bad
        if type(data['peer_outside']) is not bool:
            raise _Bad
        if type(data['unlinked']) is not bool:
            raise _Bad
        c0 = conv0(data['address'])
        c1 = conv1(data['waiting'])
        c2 = conv2(data['peer_address'])
        c3 = conv3(data['messages'])
        kw = dict(data)
        kw['address'] = c0
        kw['waiting'] = c1
        kw['peer_address'] = c2
        kw['messages'] = c3
        obj = new(cls)
        obj.__dict__ = kw
        return obj
    return decode
