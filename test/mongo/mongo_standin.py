#!/usr/bin/python3
# -*- coding: utf-8 -*-
"""mongo_standin.py -- a MongoDB wire-protocol STAND-IN for chanced's tests.

THIS IS TEST SCAFFOLDING, NOT MongoDB.  Debian has no MongoDB server, so the
test suites talk to this process instead, through the real MongoDB C driver
(libmongoc 1.23).  It is built from two Debian packages:

  * python3-mockupdb  -- the wire protocol: message framing, OP_QUERY (the
    driver's legacy `isMaster` handshake), OP_MSG with document sequences
    (section kind 1), OP_REPLY / OP_MSG replies;
  * python3-mongomock -- the semantics: in-memory databases/collections,
    query filters, sort/skip/limit/projection, updates, aggregation,
    unique and TTL indexes.

It must run under /usr/bin/python3 (the Debian interpreter that sees those
packages), e.g.

    /usr/bin/python3 test/mongo/mongo_standin.py --port 27917 [--verbose]

and the driver URI should carry socketTimeoutMS (and serverSelectionTimeoutMS)
so that a SIGSTOPped stand-in is detected quickly:

    mongodb://127.0.0.1:27917/chanced?socketTimeoutMS=2000&serverSelectionTimeoutMS=2000

It presents itself as a standalone server (maxWireVersion 13 = "5.0"), with
sessions (logicalSessionTimeoutMinutes) but without topologyVersion, so the
driver polls with hello instead of using the streaming protocol.

Supported commands: hello/isMaster/ismaster, ping, buildInfo, endSessions,
getLastError, whatsmyuri, connectionStatus, serverStatus, listDatabases,
insert, find, getMore, killCursors, count, distinct, aggregate, update,
delete, findAndModify, createIndexes, listIndexes, dropIndexes, create,
drop, dropDatabase, listCollections.  Anything else: ok:0, code 59
CommandNotFound.  All data lives in memory and vanishes on exit.
"""

import argparse
import datetime
import errno
import gc
import itertools
import os
import re
import select
import signal
import socket
import sys
import threading
import time
import traceback
from collections import OrderedDict

try:
    import bson
    from bson.int64 import Int64
    from bson.objectid import ObjectId
    from bson.regex import Regex

    import mockupdb
    from mockupdb import (MockupDB, OpMsg, OpQuery, Command, OpMsgReply,
                          OpReply, OP_MSG_FLAGS, mock_server_receive_request)

    import mongomock
    import mongomock.aggregate
    import mongomock.collection
    import mongomock.filtering
    import mongomock.store
    from pymongo import ReturnDocument
    from pymongo.errors import DuplicateKeyError, OperationFailure, PyMongoError
except ImportError as _e:
    sys.stderr.write('mongo_standin: %s\nmongo_standin: run me with /usr/bin/python3 '
                     'and the Debian packages python3-mockupdb python3-mongomock '
                     '(this interpreter is %s)\n' % (_e, sys.executable))
    sys.exit(2)

PROG = 'mongo_standin'
MAX_WIRE_VERSION = 13            # MongoDB 5.0; libmongoc 1.23 supports 6..17
FAKE_VERSION = '5.0.0'
MAX_BSON = 16 * 1024 * 1024
MAX_MSG = 48000000
DEFAULT_FIRST_BATCH = 101
BATCH_BYTES = MAX_BSON - 64 * 1024   # keep each cursor batch below 16 MiB
CURSOR_IDLE_SECS = 600

CODE_NAMES = {
    1: 'InternalError', 2: 'BadValue', 9: 'FailedToParse', 13: 'Unauthorized',
    14: 'TypeMismatch', 26: 'NamespaceNotFound', 27: 'IndexNotFound',
    43: 'CursorNotFound', 48: 'NamespaceExists', 59: 'CommandNotFound',
    67: 'CannotCreateIndex', 72: 'InvalidOptions', 73: 'InvalidNamespace',
    85: 'IndexOptionsConflict', 86: 'IndexKeySpecsConflict',
    115: 'CommandNotSupported', 11000: 'DuplicateKey',
}

BANNER = (
    '==============================================================\n'
    ' mongo_standin: TEST STAND-IN speaking the MongoDB wire protocol\n'
    ' (python3-mockupdb + python3-mongomock, data in memory only).\n'
    ' This is NOT MongoDB.  Use it for tests only.\n'
    '==============================================================\n')


def log(msg):
    sys.stderr.write('%s %s: %s\n' % (
        time.strftime('%H:%M:%S'), PROG, msg))
    sys.stderr.flush()


class CmdError(Exception):
    """A command-level failure, answered as {ok: 0, errmsg, code, codeName}."""

    def __init__(self, code, errmsg, code_name=None, **extra):
        Exception.__init__(self, errmsg)
        self.code = code
        self.errmsg = errmsg
        self.code_name = code_name or CODE_NAMES.get(code, 'Location%d' % code)
        self.extra = extra

    def doc(self):
        d = OrderedDict([('ok', 0.0), ('errmsg', self.errmsg),
                         ('code', self.code), ('codeName', self.code_name)])
        d.update(self.extra)
        return d


class WriteErr(Exception):
    """One entry of a write command's writeErrors array."""

    def __init__(self, code, errmsg, **extra):
        Exception.__init__(self, errmsg)
        self.code = code
        self.errmsg = errmsg
        self.extra = extra

    def doc(self, index):
        d = OrderedDict([('index', index), ('code', self.code)])
        d.update(self.extra)          # keyPattern, keyValue for 11000
        d['errmsg'] = self.errmsg
        return d


# ---------------------------------------------------------------- helpers

def fmt_val(v):
    """Render a value the way mongod does inside 'dup key: { ... }'."""
    if v is None:
        return 'null'
    if isinstance(v, bool):
        return 'true' if v else 'false'
    if isinstance(v, str):
        return '"%s"' % v.replace('\\', '\\\\').replace('"', '\\"')
    if isinstance(v, ObjectId):
        return "ObjectId('%s')" % v
    if isinstance(v, datetime.datetime):
        if v.tzinfo is not None:
            v = v.replace(tzinfo=None) - v.utcoffset()
        ms = int((v - datetime.datetime(1970, 1, 1)).total_seconds() * 1000)
        return 'new Date(%d)' % ms
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, dict):
        return fmt_doc(v)
    if isinstance(v, (list, tuple)):
        return '[ %s ]' % ', '.join(fmt_val(x) for x in v) if v else '[]'
    return repr(v)


def fmt_doc(d):
    if not d:
        return '{}'
    return '{ %s }' % ', '.join('%s: %s' % (k, fmt_val(v)) for k, v in d.items())


def get_path(doc, path):
    cur = doc
    for part in path.split('.'):
        if isinstance(cur, dict) and part in cur:
            cur = cur[part]
        elif isinstance(cur, list) and part.isdigit() and int(part) < len(cur):
            cur = cur[int(part)]
        else:
            return None
    return cur


def as_int(v, what, default=0):
    if v is None:
        return default
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise CmdError(14, "Field '%s' must be numeric" % what)
    if isinstance(v, float) and v != int(v):
        raise CmdError(2, "Field '%s' must be an integer" % what)
    return int(v)


def need_str(cmd, key):
    v = cmd.get(key)
    if not isinstance(v, str):
        raise CmdError(73, 'collection name has invalid type %s'
                       % type(v).__name__)
    if not v:
        raise CmdError(73, 'Invalid namespace specified')
    if '$' in v or '\0' in v:
        raise CmdError(73, "Invalid collection name: %s" % v)
    return v


def id_first(doc):
    """mongod always returns _id as the first field; mongomock may not."""
    if isinstance(doc, dict) and '_id' in doc and next(iter(doc)) != '_id':
        out = OrderedDict([('_id', doc['_id'])])
        out.update((k, v) for k, v in doc.items() if k != '_id')
        return out
    return doc


def sort_list(sort):
    if not sort:
        return None
    if not isinstance(sort, dict):
        raise CmdError(14, "Expected field sort to be of type object")
    out = []
    for k, v in sort.items():
        if isinstance(v, dict):
            raise NotImplementedError('sort by %s: %r' % (k, v))
        out.append((k, -1 if v < 0 else 1))
    return out


def throttle_ttl(interval):
    """mongomock expires TTL documents on *every* access, which scans the whole
    collection per insert.  MongoDB's TTL monitor runs every 60 s; we run it
    at most once per `interval` seconds per collection."""
    orig = mongomock.store.CollectionStore._remove_expired_documents

    def _remove_expired_documents(self):
        if not self._ttl_indexes:
            return
        now = time.monotonic()
        if now - getattr(self, '_standin_last_ttl', -1e9) < interval:
            return
        self._standin_last_ttl = now
        orig(self)

    mongomock.store.CollectionStore._remove_expired_documents = \
        _remove_expired_documents


def fast_id_lookup():
    """mongomock scans the whole collection even for {_id: <scalar>}; look the
    document up by key instead (same result, O(1)).  This keeps duplicate-key
    handling and _id-keyed updates/deletes fast on large collections."""
    coll_cls = mongomock.collection.Collection
    orig = coll_cls._iter_documents

    def _iter_documents(self, filter):
        if isinstance(filter, dict) and len(filter) == 1 and '_id' in filter:
            v = filter['_id']
            if isinstance(v, (str, ObjectId, datetime.datetime)) or (
                    isinstance(v, (int, float)) and not isinstance(v, bool)):
                try:
                    doc = self._store[v]
                except KeyError:
                    return iter(())
                if not isinstance(doc.get('_id'), bool):
                    return iter([doc])
        return orig(self, filter)

    coll_cls._iter_documents = _iter_documents


_PLAIN_TYPES = frozenset((str, int, float, bool, type(None), bytes, Int64, ObjectId))


def plain_doc(d):
    """True if mongomock would store d as it is: no key that its check refuses ('$' first or a
    '.'), and no value it rewrites (an aware or sub-millisecond datetime, a null Timestamp) or
    that this check does not know. Documents decoded from BSON almost always are."""
    for k, v in d.items():
        if k[:1] == '$' or '.' in k:
            return False
        t = type(v)
        if t in _PLAIN_TYPES:
            continue
        if t is OrderedDict or t is dict:
            if not plain_doc(v):
                return False
        elif t is list:
            for x in v:
                tx = type(x)
                if tx in _PLAIN_TYPES:
                    continue
                if tx is not OrderedDict and tx is not dict or not plain_doc(x):
                    return False
        elif t is datetime.datetime:
            if v.tzinfo is not None or v.microsecond % 1000:
                return False
        else:
            return False
    return True


# ---------------------------------------------------------------- engine

class Engine(object):
    """Command semantics on top of a mongomock client.  One lock around it."""

    def __init__(self):
        self.client = mongomock.MongoClient()
        self.lock = threading.RLock()
        self.cursors = {}           # id -> dict(ns, docs, touched)
        self.cursor_ids = itertools.count(0x5354414E00000001)  # "STAN..."
        self.started = time.time()
        self.write_concerns = {}    # "db.collection" -> writeConcern of the last insert
        self.handlers = self.table()

    # -- plumbing
    def coll(self, db, name):
        return self.client[db][name]

    def exists(self, db, name):
        return name in self.client[db].list_collection_names()

    @staticmethod
    def take(docs, n):
        """Split docs into (batch, rest): at most n docs (n<=0: no count
        limit) and below BATCH_BYTES."""
        out, size = [], 0
        for i, d in enumerate(docs):
            if n > 0 and i >= n:
                break
            dsz = len(bson.BSON.encode(d))
            if out and size + dsz > BATCH_BYTES:
                break
            out.append(d)
            size += dsz
        return out, docs[len(out):]

    def cursor_reply(self, ns, docs, batch_size, single_batch=False):
        if batch_size is None:
            batch_size = DEFAULT_FIRST_BATCH
        if batch_size == 0:
            batch, rest = [], docs
        else:
            batch, rest = self.take(docs, batch_size)
        cid = 0
        if rest and not single_batch:
            self.expire_cursors()
            cid = next(self.cursor_ids)
            self.cursors[cid] = {'ns': ns, 'docs': rest,
                                 'touched': time.monotonic()}
        return OrderedDict([
            ('cursor', OrderedDict([('firstBatch', batch), ('id', Int64(cid)),
                                    ('ns', ns)])),
            ('ok', 1.0)])

    def expire_cursors(self):
        now = time.monotonic()
        for cid in [c for c, s in self.cursors.items()
                    if now - s['touched'] > CURSOR_IDLE_SECS]:
            del self.cursors[cid]

    # -- handshake / admin
    def hello(self, db, cmd, conn):
        name = next(iter(cmd))
        r = OrderedDict()
        if name == 'hello':
            r['isWritablePrimary'] = True
        else:
            r['ismaster'] = True
        if cmd.get('helloOk'):
            r['helloOk'] = True
        r['maxBsonObjectSize'] = MAX_BSON
        r['maxMessageSizeBytes'] = MAX_MSG
        r['maxWriteBatchSize'] = 100000
        r['localTime'] = datetime.datetime.utcnow()
        r['logicalSessionTimeoutMinutes'] = 30
        r['connectionId'] = conn['id']
        r['minWireVersion'] = 0
        r['maxWireVersion'] = MAX_WIRE_VERSION
        r['readOnly'] = False
        r['ok'] = 1.0
        return r

    def build_info(self, db, cmd, conn):
        return OrderedDict([
            ('version', FAKE_VERSION), ('gitVersion', 'mongo-standin'),
            ('versionArray', [5, 0, 0, 0]), ('bits', 64), ('debug', False),
            ('maxBsonObjectSize', MAX_BSON),
            ('standin', 'mongo_standin.py (mockupdb + mongomock): '
                        'a test stand-in, NOT MongoDB'),
            ('ok', 1.0)])

    def ok(self, db, cmd, conn):
        return {'ok': 1.0}

    def get_last_error(self, db, cmd, conn):
        return OrderedDict([('n', 0), ('err', None), ('ok', 1.0)])

    def whatsmyuri(self, db, cmd, conn):
        return OrderedDict([('you', conn['peer']), ('ok', 1.0)])

    def connection_status(self, db, cmd, conn):
        return OrderedDict([('authInfo', OrderedDict([
            ('authenticatedUsers', []), ('authenticatedUserRoles', [])])),
            ('ok', 1.0)])

    def server_status(self, db, cmd, conn):
        return OrderedDict([
            ('host', socket.gethostname()), ('version', FAKE_VERSION),
            ('process', PROG), ('pid', Int64(os.getpid())),
            ('uptime', float(time.time() - self.started)),
            ('localTime', datetime.datetime.utcnow()),
            ('connections', {'current': conn['server'].nconns}),
            ('ok', 1.0)])

    def list_databases(self, db, cmd, conn):
        names = self.client.list_database_names()
        dbs = [OrderedDict([('name', n), ('sizeOnDisk', Int64(0)),
                            ('empty', False)]) for n in names]
        if cmd.get('nameOnly'):
            dbs = [{'name': n} for n in names]
        return OrderedDict([('databases', dbs), ('totalSize', Int64(0)),
                            ('ok', 1.0)])

    # -- writes
    def dup_error(self, c, db, cname, doc):
        """Build the E11000 write error for `doc`, which mongomock refused."""
        candidates = [('_id_', [('_id', 1)], False)]
        for name, info in c.index_information().items():
            if name != '_id_' and info.get('unique'):
                candidates.append((name, list(info['key']),
                                   info.get('sparse', False)))
        for name, key, sparse in candidates:
            kv = OrderedDict((k, get_path(doc, k)) for k, _ in key)
            if sparse and all(v is None for v in kv.values()):
                continue
            if c.find_one(dict(kv), {'_id': 1}) is not None:
                break
        else:
            name, key = candidates[0][0], candidates[0][1]
            kv = OrderedDict((k, get_path(doc, k)) for k, _ in key)
        kp = OrderedDict((k, d) for k, d in key)
        msg = ('E11000 duplicate key error collection: %s.%s index: %s '
               'dup key: %s' % (db, cname, name, fmt_doc(kv)))
        return WriteErr(11000, msg, keyPattern=kp, keyValue=kv)

    def insert_doc(self, c, db, cname, doc):
        if not isinstance(doc, dict):
            raise WriteErr(2, 'document to insert must be an object')
        if '_id' not in doc:
            doc = OrderedDict([('_id', ObjectId())] + list(doc.items()))
        if isinstance(doc['_id'], (list, Regex, re.Pattern)):
            raise WriteErr(2, "can't use an array or regex for _id")
        try:
            c.insert_one(doc)
        except DuplicateKeyError:
            raise self.dup_error(c, db, cname, doc)
        except (bson.errors.InvalidDocument, ValueError, TypeError) as e:
            raise WriteErr(2, str(e))
        except OperationFailure as e:
            raise WriteErr(e.code or 2, str(e))

    def insert_plain(self, c, db, cname, doc):
        """insert_doc for a document mongomock would store unchanged (see plain_doc), in a
        collection whose only unique index is _id: the same outcome without mongomock's
        validation, copy and locking, which cost ten times the store itself."""
        if type(doc) not in (OrderedDict, dict) or not plain_doc(doc):
            return self.insert_doc(c, db, cname, doc)
        if '_id' not in doc:
            doc = OrderedDict([('_id', ObjectId())] + list(doc.items()))
        elif type(doc['_id']) not in (str, ObjectId, int, Int64):
            return self.insert_doc(c, db, cname, doc)
        store = c._store
        if doc['_id'] in store:
            raise self.dup_error(c, db, cname, doc)
        store[doc['_id']] = doc

    def insert(self, db, cmd, conn):
        cname = need_str(cmd, 'insert')
        self.write_concerns['%s.%s' % (db, cname)] = cmd.get('writeConcern')
        docs = cmd.get('documents')
        if not isinstance(docs, list) or not docs:
            raise CmdError(9, "'documents' must be a non-empty array")
        ordered = cmd.get('ordered', True)
        c = self.coll(db, cname)
        plain = not any(info.get('unique') for name, info in c._store.indexes.items()
                        if name != '_id_')
        put = self.insert_plain if plain else self.insert_doc
        n, errs = 0, []
        for i, d in enumerate(docs):
            try:
                put(c, db, cname, d)
                n += 1
            except WriteErr as e:
                errs.append(e.doc(i))
                if ordered:
                    break
        r = OrderedDict([('n', n)])
        if errs:
            r['writeErrors'] = errs
        r['ok'] = 1.0
        return r

    def update(self, db, cmd, conn):
        cname = need_str(cmd, 'update')
        ups = cmd.get('updates')
        if not isinstance(ups, list) or not ups:
            raise CmdError(9, "'updates' must be a non-empty array")
        ordered = cmd.get('ordered', True)
        c = self.coll(db, cname)
        n = nmod = 0
        upserted, errs = [], []
        for i, u in enumerate(ups):
            try:
                q = u.get('q') or {}
                doc = u.get('u')
                upsert = bool(u.get('upsert', False))
                multi = bool(u.get('multi', False))
                if isinstance(doc, list):
                    raise NotImplementedError('pipeline-style updates')
                if not isinstance(doc, dict):
                    raise WriteErr(9, "'u' must be an object")
                is_ops = any(k.startswith('$') for k in doc)
                try:
                    if is_ops:
                        res = (c.update_many if multi else c.update_one)(
                            q, doc, upsert=upsert,
                            array_filters=u.get('arrayFilters'))
                    else:
                        if multi:
                            raise WriteErr(9, 'multi update is not supported '
                                           'for replacement-style update')
                        res = c.replace_one(q, doc, upsert=upsert)
                except DuplicateKeyError:
                    raise self.dup_error(c, db, cname, dict(q, **({} if is_ops else doc)))
                except (ValueError, TypeError) as e:
                    raise WriteErr(9, str(e))
                except OperationFailure as e:
                    raise WriteErr(e.code or 2, str(e))
                raw = res.raw_result
                if raw.get('upserted') is not None:
                    n += 1
                    upserted.append(OrderedDict([('index', i),
                                                 ('_id', raw['upserted'])]))
                else:
                    n += raw.get('n', 0)
                    nmod += raw.get('nModified', 0) or 0
            except WriteErr as e:
                errs.append(e.doc(i))
                if ordered:
                    break
        r = OrderedDict([('n', n), ('nModified', nmod)])
        if upserted:
            r['upserted'] = upserted
        if errs:
            r['writeErrors'] = errs
        r['ok'] = 1.0
        return r

    def delete(self, db, cmd, conn):
        cname = need_str(cmd, 'delete')
        dels = cmd.get('deletes')
        if not isinstance(dels, list) or not dels:
            raise CmdError(9, "'deletes' must be a non-empty array")
        ordered = cmd.get('ordered', True)
        c = self.coll(db, cname)
        n, errs = 0, []
        for i, d in enumerate(dels):
            try:
                q = d.get('q')
                if not isinstance(q, dict):
                    raise WriteErr(9, "'q' must be an object")
                limit = as_int(d.get('limit', 0), 'limit')
                try:
                    res = (c.delete_one if limit == 1 else c.delete_many)(q)
                except OperationFailure as e:
                    raise WriteErr(e.code or 2, str(e))
                n += res.deleted_count
            except WriteErr as e:
                errs.append(e.doc(i))
                if ordered:
                    break
        r = OrderedDict([('n', n)])
        if errs:
            r['writeErrors'] = errs
        r['ok'] = 1.0
        return r

    def find_and_modify(self, db, cmd, conn):
        name = next(iter(cmd))
        cname = need_str(cmd, name)
        c = self.coll(db, cname)
        query = cmd.get('query') or {}
        sort = sort_list(cmd.get('sort'))
        fields = cmd.get('fields') or None
        remove = bool(cmd.get('remove', False))
        upd = cmd.get('update')
        new = bool(cmd.get('new', False))
        upsert = bool(cmd.get('upsert', False))
        if remove == (upd is not None):
            raise CmdError(9, 'Either an update or remove=true must be specified')
        before = c.find_one(query, sort=sort)
        leo = OrderedDict()
        try:
            if remove:
                if before is not None:
                    c.delete_one({'_id': before['_id']})
                leo['n'] = 1 if before is not None else 0
                value = before
            else:
                if not isinstance(upd, dict):
                    raise NotImplementedError('pipeline-style findAndModify')
                is_ops = any(k.startswith('$') for k in upd)
                fn = c.find_one_and_update if is_ops else c.find_one_and_replace
                after = fn(query, upd, sort=sort, upsert=upsert,
                           return_document=ReturnDocument.AFTER)
                if before is not None:
                    leo['n'] = 1
                    leo['updatedExisting'] = True
                    value = after if new else before
                elif after is not None:
                    leo['n'] = 1
                    leo['updatedExisting'] = False
                    leo['upserted'] = after['_id']
                    value = after if new else None
                else:
                    leo['n'] = 0
                    leo['updatedExisting'] = False
                    value = None
        except DuplicateKeyError:
            e = self.dup_error(c, db, cname, dict(query))
            raise CmdError(11000, e.errmsg, **e.extra)
        if value is not None and fields:
            value = c._copy_only_fields(value, fields, OrderedDict)
        return OrderedDict([('lastErrorObject', leo), ('value', value),
                            ('ok', 1.0)])

    # -- reads
    def find(self, db, cmd, conn):
        cname = need_str(cmd, 'find')
        flt = cmd.get('filter') or {}
        if not isinstance(flt, dict):
            raise CmdError(14, "Expected field filter to be of type object")
        proj = cmd.get('projection') or None
        skip = as_int(cmd.get('skip'), 'skip')
        limit = as_int(cmd.get('limit'), 'limit')
        if skip < 0:
            raise CmdError(2, 'Skip value must be non-negative, but received: %d' % skip)
        single = bool(cmd.get('singleBatch', False))
        if limit < 0:
            limit, single = -limit, True
        bs = cmd.get('batchSize')
        bs = None if bs is None else as_int(bs, 'batchSize')
        if bs is not None and bs < 0:
            raise CmdError(2, 'BatchSize value must be non-negative, but received: %d' % bs)
        docs = [id_first(d) for d in self.coll(db, cname).find(
            flt, proj, skip=skip, limit=limit, sort=sort_list(cmd.get('sort')))]
        return self.cursor_reply('%s.%s' % (db, cname), docs, bs, single)

    def get_more(self, db, cmd, conn):
        cid = cmd.get('getMore')
        if not isinstance(cid, int):
            raise CmdError(14, "Field 'getMore' must be of type long")
        cname = need_str(cmd, 'collection')
        st = self.cursors.get(int(cid))
        if st is None:
            raise CmdError(43, 'cursor id %d not found' % cid)
        ns = '%s.%s' % (db, cname)
        if st['ns'] != ns and not st['ns'].startswith('%s.$cmd' % db):
            raise CmdError(13, "Requested getMore on namespace '%s', but cursor "
                               "belongs to a different namespace %s" % (ns, st['ns']))
        bs = as_int(cmd.get('batchSize'), 'batchSize')
        batch, rest = self.take(st['docs'], bs)
        if rest:
            st['docs'], st['touched'] = rest, time.monotonic()
            out_id = int(cid)
        else:
            del self.cursors[int(cid)]
            out_id = 0
        return OrderedDict([
            ('cursor', OrderedDict([('nextBatch', batch), ('id', Int64(out_id)),
                                    ('ns', st['ns'])])),
            ('ok', 1.0)])

    def kill_cursors(self, db, cmd, conn):
        need_str(cmd, 'killCursors')
        ids = cmd.get('cursors')
        if not isinstance(ids, list):
            raise CmdError(9, "'cursors' must be an array")
        killed, missing = [], []
        for cid in ids:
            if self.cursors.pop(int(cid), None) is not None:
                killed.append(Int64(cid))
            else:
                missing.append(Int64(cid))
        return OrderedDict([('cursorsKilled', killed),
                            ('cursorsNotFound', missing),
                            ('cursorsAlive', []), ('cursorsUnknown', []),
                            ('ok', 1.0)])

    def count(self, db, cmd, conn):
        cname = need_str(cmd, 'count')
        q = cmd.get('query') or {}
        skip = as_int(cmd.get('skip'), 'skip')
        limit = abs(as_int(cmd.get('limit'), 'limit'))
        n = len(list(self.coll(db, cname).find(q, {'_id': 1}, skip=skip,
                                               limit=limit)))
        return OrderedDict([('n', n), ('ok', 1.0)])

    def distinct(self, db, cmd, conn):
        cname = need_str(cmd, 'distinct')
        key = cmd.get('key')
        if not isinstance(key, str):
            raise CmdError(14, "'key' must be a string")
        vals = self.coll(db, cname).distinct(key, cmd.get('query') or {})
        return OrderedDict([('values', vals), ('ok', 1.0)])

    def aggregate(self, db, cmd, conn):
        target = cmd.get('aggregate')
        if not isinstance(target, str):
            raise CmdError(115, 'collection-less aggregate {aggregate: 1} is '
                                'not supported by the stand-in')
        cname = need_str(cmd, 'aggregate')
        pipeline = cmd.get('pipeline')
        if not isinstance(pipeline, list):
            raise CmdError(14, "'pipeline' option must be specified as an array")
        if cmd.get('explain'):
            raise CmdError(115, 'explain is not supported by the stand-in')
        cur = cmd.get('cursor')
        if not isinstance(cur, dict):
            raise CmdError(9, "The 'cursor' option is required, except for "
                              "aggregate with the explain argument")
        c = self.coll(db, cname)
        if pipeline and isinstance(pipeline[0], dict) and '$collStats' in pipeline[0]:
            spec = pipeline[0]['$collStats'] or {}
            head = OrderedDict([('ns', '%s.%s' % (db, cname)),
                                ('host', socket.gethostname()),
                                ('localTime', datetime.datetime.utcnow())])
            if 'count' in spec:
                head['count'] = c.count_documents({})
            docs = list(mongomock.aggregate.process_pipeline(
                [head], c.database, pipeline[1:], None))
        else:
            for st in pipeline:
                if not isinstance(st, dict) or len(st) != 1:
                    raise CmdError(40323, 'A pipeline stage specification '
                                          'object must contain exactly one field.')
                op = next(iter(st))
                if op not in mongomock.aggregate._PIPELINE_HANDLERS:
                    raise CmdError(40324, "Unrecognized pipeline stage name: '%s'" % op)
            docs = [id_first(d) for d in c.aggregate(pipeline)]
        bs = cur.get('batchSize')
        bs = None if bs is None else as_int(bs, 'batchSize')
        return self.cursor_reply('%s.%s' % (db, cname), docs, bs)

    # -- DDL
    def create_indexes(self, db, cmd, conn):
        cname = need_str(cmd, 'createIndexes')
        specs = cmd.get('indexes')
        if not isinstance(specs, list) or not specs:
            raise CmdError(2, 'Must specify at least one index to create')
        c = self.coll(db, cname)
        existed = self.exists(db, cname)
        before = len(c.index_information()) if existed else 0
        for spec in specs:
            if not isinstance(spec, dict) or not isinstance(spec.get('key'), dict) \
                    or not spec['key']:
                raise CmdError(9, "Error in specification %s :: caused by :: "
                                  "The 'key' field must be a non-empty object"
                               % fmt_val(spec))
            key = list(spec['key'].items())
            for _, d in key:
                if not (isinstance(d, (int, float)) and not isinstance(d, bool)
                        and d != 0) and d not in ('text', 'hashed', '2d', '2dsphere'):
                    raise CmdError(67, 'Values in the index key pattern can '
                                       'contain only non-zero numbers or strings')
            key = [(k, (1 if d > 0 else -1) if isinstance(d, (int, float)) else d)
                   for k, d in key]
            name = spec.get('name') or '_'.join('%s_%s' % kd for kd in key)
            if not isinstance(name, str):
                raise CmdError(14, "The field 'name' must be a string")
            opts = OrderedDict()
            for o in ('unique', 'sparse'):
                if spec.get(o):
                    opts[o] = True
            for o in ('expireAfterSeconds', 'partialFilterExpression'):
                if spec.get(o) is not None:
                    opts[o] = spec[o]
            if 'expireAfterSeconds' in opts:
                eas = opts['expireAfterSeconds']
                if isinstance(eas, bool) or not isinstance(eas, (int, float)) \
                        or eas < 0 or len(key) != 1:
                    raise CmdError(67, 'TTL index expireAfterSeconds must be a '
                                       'non-negative number on a single field')
            info = c.index_information() if self.exists(db, cname) else {}
            if name == '_id_' or key == [('_id', 1)]:
                if key != [('_id', 1)] or name not in ('_id_', '_id_1'):
                    raise CmdError(67, 'bad _id index specification')
                continue
            ex = info.get(name)
            if ex is not None:
                if list(ex['key']) != key:
                    raise CmdError(86, 'An existing index has the same name as '
                                       'the requested index. Requested index: %s, '
                                       'existing index: %s'
                                   % (fmt_doc(spec), fmt_doc(dict(ex, name=name))))
                ex_opts = {k: v for k, v in ex.items() if k not in ('key', 'v')}
                if ex_opts != dict(opts):
                    raise CmdError(85, 'An equivalent index already exists with '
                                       'the same name but different options. '
                                       'Requested index: %s, existing index: %s'
                                   % (fmt_doc(spec), fmt_doc(dict(ex, name=name))))
                continue
            for oname, oinfo in info.items():
                if list(oinfo['key']) == key:
                    raise CmdError(85, 'Index already exists with a different '
                                       'name: %s' % oname)
            try:
                c.create_index(key, name=name, **opts)
            except DuplicateKeyError:
                raise CmdError(11000, 'Index build failed: E11000 duplicate key '
                                      'error collection: %s.%s index: %s'
                               % (db, cname, name))
            except (OperationFailure, TypeError, ValueError) as e:
                raise CmdError(getattr(e, 'code', None) or 67, str(e))
        after = len(c.index_information())
        r = OrderedDict([('numIndexesBefore', before or 1),
                         ('numIndexesAfter', after)])
        if existed and after == before:
            r['note'] = 'all indexes already exist'
        else:
            r['createdCollectionAutomatically'] = not existed
        r['ok'] = 1.0
        return r

    def list_indexes(self, db, cmd, conn):
        cname = need_str(cmd, 'listIndexes')
        if not self.exists(db, cname):
            raise CmdError(26, 'ns does not exist: %s.%s' % (db, cname))
        docs = []
        for ix in self.coll(db, cname).list_indexes():
            d = OrderedDict([('v', 2), ('key', OrderedDict(ix['key'])),
                             ('name', ix['name'])])
            for k, v in ix.items():
                if k not in d:
                    d[k] = v
            docs.append(d)
        bs = (cmd.get('cursor') or {}).get('batchSize')
        return self.cursor_reply('%s.$cmd.listIndexes.%s' % (db, cname), docs,
                                 None if bs is None else as_int(bs, 'batchSize'))

    def drop_indexes(self, db, cmd, conn):
        cname = need_str(cmd, 'dropIndexes')
        if not self.exists(db, cname):
            raise CmdError(26, 'ns not found %s.%s' % (db, cname))
        c = self.coll(db, cname)
        info = c.index_information()
        which = cmd.get('index')
        if which == '*':
            c.drop_indexes()
        else:
            names = which if isinstance(which, list) else [which]
            for w in names:
                if isinstance(w, dict):
                    m = [n for n, i in info.items() if list(i['key']) == list(w.items())]
                    if not m:
                        raise CmdError(27, "can't find index with key: %s" % fmt_doc(w))
                    w = m[0]
                if w == '_id_':
                    raise CmdError(72, 'cannot drop _id index')
                if w not in info:
                    raise CmdError(27, 'index not found with name [%s]' % w)
                c.drop_index(w)
        return OrderedDict([('nIndexesWas', len(info)), ('ok', 1.0)])

    def create(self, db, cmd, conn):
        cname = need_str(cmd, 'create')
        if self.exists(db, cname):
            raise CmdError(48, 'Collection %s.%s already exists.' % (db, cname))
        self.client[db].create_collection(cname)
        return {'ok': 1.0}

    def drop(self, db, cmd, conn):
        cname = need_str(cmd, 'drop')
        if not self.exists(db, cname):
            raise CmdError(26, 'ns not found')
        n = len(self.coll(db, cname).index_information())
        self.coll(db, cname).drop()
        ns = '%s.%s' % (db, cname)
        for cid in [i for i, s in self.cursors.items() if s['ns'] == ns]:
            del self.cursors[cid]
        return OrderedDict([('nIndexesWas', n), ('ns', ns), ('ok', 1.0)])

    def drop_database(self, db, cmd, conn):
        self.client.drop_database(db)
        for cid in [i for i, s in self.cursors.items()
                    if s['ns'].startswith(db + '.')]:
            del self.cursors[cid]
        return OrderedDict([('dropped', db), ('ok', 1.0)])

    def list_collections(self, db, cmd, conn):
        flt = cmd.get('filter') or {}
        docs = []
        for n in sorted(self.client[db].list_collection_names()):
            d = OrderedDict([('name', n), ('type', 'collection')])
            if not cmd.get('nameOnly'):
                d['options'] = {}
                d['info'] = {'readOnly': False}
                d['idIndex'] = OrderedDict([('v', 2), ('key', {'_id': 1}),
                                            ('name', '_id_')])
            if mongomock.filtering.filter_applies(flt, d):
                docs.append(d)
        bs = (cmd.get('cursor') or {}).get('batchSize')
        return self.cursor_reply('%s.$cmd.listCollections' % db, docs,
                                 None if bs is None else as_int(bs, 'batchSize'))

    # -- dispatch
    LOCKLESS = ('hello', 'isMaster', 'ismaster', 'ping', 'buildInfo',
                'buildinfo', 'endSessions', 'getLastError', 'getlasterror',
                'whatsmyuri', 'connectionStatus')

    def table(self):
        return {
            'hello': self.hello, 'isMaster': self.hello, 'ismaster': self.hello,
            'ping': self.ok, 'buildInfo': self.build_info,
            'buildinfo': self.build_info, 'endSessions': self.ok,
            'getLastError': self.get_last_error,
            'getlasterror': self.get_last_error,
            'whatsmyuri': self.whatsmyuri,
            'connectionStatus': self.connection_status,
            'serverStatus': self.server_status,
            'listDatabases': self.list_databases,
            'insert': self.insert, 'update': self.update,
            'delete': self.delete, 'findAndModify': self.find_and_modify,
            'findandmodify': self.find_and_modify,
            'find': self.find, 'getMore': self.get_more,
            'killCursors': self.kill_cursors, 'count': self.count,
            'distinct': self.distinct, 'aggregate': self.aggregate,
            'createIndexes': self.create_indexes,
            'listIndexes': self.list_indexes,
            'dropIndexes': self.drop_indexes, 'deleteIndexes': self.drop_indexes,
            'create': self.create, 'drop': self.drop,
            'dropDatabase': self.drop_database,
            'listCollections': self.list_collections,
            'standinWriteConcern': self.standin_write_concern,
        }

    def standin_write_concern(self, db, cmd, conn):
        """Stand-in only: the writeConcern the last insert into a collection
        carried, so tests can check what a client asks for."""
        wc = self.write_concerns.get('%s.%s' % (db, cmd.get('standinWriteConcern')))
        return OrderedDict([('writeConcern', wc), ('ok', 1.0)])

    def run(self, db, cmd, conn):
        if not cmd:
            raise CmdError(59, 'no command found in request')
        name = next(iter(cmd))
        fn = self.handlers.get(name)
        if fn is None:
            raise CmdError(59, "no such command: '%s'" % name)
        if not isinstance(db, str) or not db or '.' in db or ' ' in db:
            raise CmdError(73, "Invalid database name: '%s'" % db)
        if name in self.LOCKLESS:
            return fn(db, cmd, conn)
        with self.lock:
            return fn(db, cmd, conn)

    def execute(self, db, cmd, conn):
        """Run one command; never raises, always returns a reply document."""
        try:
            return self.run(db, cmd, conn)
        except CmdError as e:
            return e.doc()
        except DuplicateKeyError as e:
            return CmdError(11000, 'E11000 duplicate key error: %s' % e).doc()
        except OperationFailure as e:
            return CmdError(e.code or 2, str(e)).doc()
        except NotImplementedError as e:
            log('not implemented by the stand-in/mongomock: %s' % e)
            return CmdError(115, 'mongo_standin: not implemented by the '
                                 'stand-in (mongomock): %s' % e).doc()
        except (PyMongoError, ValueError, TypeError, KeyError) as e:
            return CmdError(2, '%s: %s' % (type(e).__name__, e)).doc()
        except Exception as e:            # noqa: B902  (never kill the conn)
            log('internal error: %s\n%s' % (e, traceback.format_exc()))
            return CmdError(1, 'mongo_standin internal error: %r' % e).doc()


# ---------------------------------------------------------------- server

class StandInServer(MockupDB):
    """mockupdb's MockupDB for binding and message (de)serialisation, with a
    robust accept/serve loop of our own: one thread per client connection,
    all replies computed by the Engine."""

    def __init__(self, host, port, verbose, engine):
        MockupDB.__init__(self, port=port, verbose=verbose)
        self._address = (host, port)
        self.engine = engine
        self.conn_ids = itertools.count(1)
        self.nconns = 0
        self.stopping = threading.Event()
        self.clients = set()
        self.clients_lock = threading.Lock()

    # mockupdb's run() binds (SO_REUSEADDR) and starts _accept_loop().
    def _accept_loop(self):
        lsock = self._listening_sock
        while not self.stopping.is_set():
            try:
                r, _, _ = select.select([lsock], [], [], 0.5)
                if not r:
                    continue
                sock, addr = lsock.accept()
            except (OSError, ValueError) as e:
                if self.stopping.is_set():
                    break
                if getattr(e, 'errno', None) in (errno.EMFILE, errno.ENFILE,
                                                 errno.ENOBUFS, errno.ENOMEM):
                    log('accept: %s; retrying' % e)
                    time.sleep(0.1)
                continue
            sock.setblocking(True)
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:
                pass
            t = threading.Thread(target=self._serve, args=(sock, addr),
                                 daemon=True)
            t.start()

    def _serve(self, sock, addr):
        conn = {'id': next(self.conn_ids), 'peer': '%s:%d' % addr[:2],
                'server': self}
        with self.clients_lock:
            self.clients.add(sock)
            self.nconns += 1
        if self._verbose:
            log('conn#%d open from %s' % (conn['id'], conn['peer']))
        try:
            while not self.stopping.is_set():
                try:
                    req = mock_server_receive_request(sock, self)
                except (OSError, EOFError):
                    break
                except Exception as e:      # unparseable / unsupported opcode
                    log('conn#%d: cannot parse request (%s: %s); closing'
                        % (conn['id'], type(e).__name__, e))
                    break
                if not self._handle(sock, req, conn):
                    break
        finally:
            with self.clients_lock:
                self.clients.discard(sock)
                self.nconns -= 1
            try:
                sock.close()
            except OSError:
                pass
            if self._verbose:
                log('conn#%d closed' % conn['id'])

    def _handle(self, sock, req, conn):
        """Answer one request.  Returns False to drop the connection."""
        if isinstance(req, OpMsg):
            db, cmd = req.namespace, OrderedDict(req.doc)
            cmd.pop('$db', None)
            t0 = time.monotonic()
            reply = self.engine.execute(db, cmd, conn)
            self._trace(conn, 'OP_MSG', db, cmd, reply, t0)
            if req.flags & OP_MSG_FLAGS['moreToCome']:
                return True                 # unacknowledged (w:0): no reply
            data = OpMsgReply(reply).reply_bytes(req)
        elif isinstance(req, Command):      # legacy OP_QUERY on <db>.$cmd
            db, cmd = req.namespace, OrderedDict(req.doc)
            if '$query' in cmd:             # {$query: {...}, $readPreference}
                cmd = OrderedDict(cmd['$query'])
            t0 = time.monotonic()
            reply = self.engine.execute(db, cmd, conn)
            self._trace(conn, 'OP_QUERY', db, cmd, reply, t0)
            data = OpReply(reply).reply_bytes(req)
        elif isinstance(req, OpQuery):      # legacy find: removed in 5.1+
            log('conn#%d: legacy OP_QUERY find on %s refused'
                % (conn['id'], req.namespace))
            data = OpReply({'$err': 'legacy OP_QUERY is not supported by '
                                    'the stand-in', 'code': 5739101},
                           flags=2).reply_bytes(req)
        else:
            log('conn#%d: legacy opcode %s not supported; closing'
                % (conn['id'], type(req).__name__))
            return False
        try:
            sock.sendall(data)
        except OSError as e:
            if self._verbose:
                log('conn#%d: reply not delivered (%s)' % (conn['id'], e))
            return False
        return True

    def _trace(self, conn, kind, db, cmd, reply, t0):
        if not self._verbose:
            return
        name = next(iter(cmd), '?')
        arg = cmd.get(name)
        extra = ''
        if name in ('insert', 'update', 'delete'):
            seq = cmd.get({'insert': 'documents', 'update': 'updates',
                           'delete': 'deletes'}[name]) or []
            extra = ' (%d ops, ordered=%s)' % (len(seq), cmd.get('ordered', True))
        elif name == 'find':
            extra = ' filter=%s' % fmt_doc(cmd.get('filter') or {})
        if reply.get('ok'):
            res = 'ok'
            for k in ('n', 'nModified'):
                if k in reply:
                    res += ' %s=%s' % (k, reply[k])
            if 'writeErrors' in reply:
                res += ' writeErrors=%d (first code %s)' % (
                    len(reply['writeErrors']), reply['writeErrors'][0]['code'])
            if 'cursor' in reply:
                b = reply['cursor'].get('firstBatch', reply['cursor'].get('nextBatch'))
                res += ' batch=%d cursor=%d' % (len(b), reply['cursor']['id'])
        else:
            res = 'ERROR %s %s: %s' % (reply.get('code'), reply.get('codeName'),
                                       reply.get('errmsg'))
        log('conn#%d %s %s.%s %s%s -> %s [%.1f ms]' % (
            conn['id'], kind, db, name, arg if isinstance(arg, (str, int)) else '',
            extra, res, (time.monotonic() - t0) * 1000))

    def _log(self, msg):
        if self._verbose:
            log(msg)

    def shutdown(self):
        self.stopping.set()
        self._stopped = True
        try:
            self._listening_sock.close()
        except OSError:
            pass
        with self.clients_lock:
            socks = list(self.clients)
        for s in socks:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


def main(argv=None):
    ap = argparse.ArgumentParser(
        description='MongoDB wire-protocol TEST STAND-IN (mockupdb + mongomock). '
                    'Not MongoDB.')
    ap.add_argument('--port', type=int, default=27017,
                    help='TCP port on 127.0.0.1 (0 = pick a free one)')
    ap.add_argument('--host', default='127.0.0.1', help=argparse.SUPPRESS)
    ap.add_argument('--verbose', action='store_true',
                    help='log every command and its outcome to stderr')
    ap.add_argument('--port-file', help='write the bound port to this file '
                                        'once listening')
    ap.add_argument('--ttl-interval', type=float, default=1.0,
                    help='seconds between TTL expiry passes per collection '
                         '(MongoDB uses 60; default 1)')
    args = ap.parse_args(argv)

    sys.stderr.write(BANNER)
    sys.stderr.flush()
    throttle_ttl(args.ttl_interval)
    fast_id_lookup()

    engine = Engine()
    server = StandInServer(args.host, args.port, args.verbose, engine)
    stop = threading.Event()

    def on_signal(signum, _frame):
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGHUP, on_signal)

    try:
        port = server.run()
    except OSError as e:
        log('cannot listen on %s:%d: %s' % (args.host, args.port, e))
        return 1
    if args.port_file:
        tmp = args.port_file + '.tmp'
        with open(tmp, 'w') as f:
            f.write('%d\n' % port)
        os.rename(tmp, args.port_file)
    log('ready: listening on %s:%d (pid %d, maxWireVersion %d, mockupdb %s, '
        'mongomock %s, BSON codec %s)' % (
            args.host, port, os.getpid(), MAX_WIRE_VERSION, mockupdb.__version__,
            mongomock.__version__,
            'C' if bson.has_c() else 'pure Python (slow: apt-get install python3-bson-ext)'))
    # Stored documents live until exit, and Python's full collection walks every object there
    # is: a second per 300,000 documents, with the interpreter lock held, so every client
    # stalls (a bench's audit lag showed 3 s). Frozen objects are never walked again; what a
    # request leaves behind is still collected until the next freeze.
    while not stop.wait(0.5):
        gc.freeze()
    log('signal received, shutting down')
    server.shutdown()
    log('stopped')
    return 0


if __name__ == '__main__':
    sys.exit(main())
