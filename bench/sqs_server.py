#!/usr/bin/env python3
"""A minimal in-memory SQS for the bench (the JSON protocol the AWS SDKs speak):
CreateQueue, GetQueueAttributes, SendMessageBatch, ReceiveMessage (long polls),
DeleteMessageBatch, DeleteMessage and ChangeMessageVisibility, with visibility
timeouts. moto's queue spends hundreds of milliseconds of CPU per ReceiveMessage
with a few thousand messages in it, so a follow row against it would measure
moto; this one answers in microseconds, as SQS does at this scale. A bench tool
only: the tests use moto.

  sqs_server.py HOST PORT
"""

import hashlib
import json
import sys
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

LOCK = threading.Condition()
QUEUES = {}  # name -> {"messages": {id: msg}, "visibility": seconds}


def md5(text):
    return hashlib.md5(text.encode()).hexdigest()


def queue_of(body):
    name = body["QueueUrl"].rstrip("/").rsplit("/", 1)[-1]
    if name not in QUEUES:
        raise KeyError(name)
    return QUEUES[name]


def create_queue(body, host):
    name = body["QueueName"]
    visibility = int(body.get("Attributes", {}).get("VisibilityTimeout", "30"))
    QUEUES.setdefault(name, {"messages": {}, "visibility": visibility, "order": []})
    return {"QueueUrl": f"http://{host}/123456789012/{name}"}


def send_batch(body, _host):
    q = queue_of(body)
    ok = []
    for e in body["Entries"]:
        mid = str(uuid.uuid4())
        q["messages"][mid] = {"body": e["MessageBody"], "visible_at": 0.0, "receipt": None}
        q["order"].append(mid)
        ok.append({"Id": e["Id"], "MessageId": mid, "MD5OfMessageBody": md5(e["MessageBody"])})
    LOCK.notify_all()
    return {"Successful": ok, "Failed": []}


def take(q, n, visibility):
    now = time.time()
    out = []
    for mid in q["order"]:
        m = q["messages"].get(mid)
        if m is None or m["visible_at"] > now:
            continue
        m["visible_at"] = now + visibility
        m["receipt"] = f"{mid}:{uuid.uuid4()}"
        out.append({"MessageId": mid, "ReceiptHandle": m["receipt"], "MD5OfBody": md5(m["body"]),
                    "Body": m["body"]})
        if len(out) == n:
            break
    q["order"] = [mid for mid in q["order"] if mid in q["messages"]]
    return out


def receive(body, _host):
    q = queue_of(body)
    n = int(body.get("MaxNumberOfMessages", 1))
    wait = int(body.get("WaitTimeSeconds", 0))
    visibility = int(body.get("VisibilityTimeout", q["visibility"]))
    deadline = time.time() + wait
    while True:
        out = take(q, n, visibility)
        if out or time.time() >= deadline:
            return {"Messages": out}
        LOCK.wait(min(0.5, deadline - time.time()))


def delete_one(q, receipt):
    mid = receipt.split(":", 1)[0]
    m = q["messages"].get(mid)
    if m is not None and m["receipt"] == receipt:
        del q["messages"][mid]


def delete_batch(body, _host):
    q = queue_of(body)
    for e in body["Entries"]:
        delete_one(q, e["ReceiptHandle"])
    return {"Successful": [{"Id": e["Id"]} for e in body["Entries"]], "Failed": []}


def delete(body, _host):
    delete_one(queue_of(body), body["ReceiptHandle"])
    return {}


def change_visibility(body, _host):
    q = queue_of(body)
    mid = body["ReceiptHandle"].split(":", 1)[0]
    m = q["messages"].get(mid)
    if m is not None:
        m["visible_at"] = time.time() + int(body.get("VisibilityTimeout", 0))
        LOCK.notify_all()
    return {}


def attributes(body, _host):
    q = queue_of(body)
    now = time.time()
    visible = sum(1 for m in q["messages"].values() if m["visible_at"] <= now)
    return {"Attributes": {"ApproximateNumberOfMessages": str(visible),
                           "ApproximateNumberOfMessagesNotVisible": str(len(q["messages"]) - visible),
                           "QueueArn": "arn:aws:sqs:us-east-1:123456789012:" + body["QueueUrl"].rsplit("/", 1)[-1]}}


OPS = {
    "CreateQueue": create_queue,
    "SendMessageBatch": send_batch,
    "ReceiveMessage": receive,
    "DeleteMessageBatch": delete_batch,
    "DeleteMessage": delete,
    "ChangeMessageVisibility": change_visibility,
    "GetQueueAttributes": attributes,
}


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def do_GET(self):
        self.reply(200, {})

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
        op = self.headers.get("X-Amz-Target", "").rpartition(".")[2]
        try:
            with LOCK:
                answer = OPS[op](body, self.headers.get("Host", "127.0.0.1"))
            self.reply(200, answer)
        except KeyError as e:
            self.reply(400, {"__type": "com.amazonaws.sqs#QueueDoesNotExist", "message": f"no queue {e}"})

    def reply(self, status, answer):
        data = json.dumps(answer).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/x-amz-json-1.0")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


if __name__ == "__main__":
    ThreadingHTTPServer((sys.argv[1], int(sys.argv[2])), Handler).serve_forever()
