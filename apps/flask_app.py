"""A small Flask app, to show the servers run a real framework (needs `pip install flask`)."""

from flask import Flask, jsonify

app = Flask(__name__)


@app.get("/hello")
def hello():
    return jsonify(message="Hello, World!")


@app.get("/hello/<username>")
def hello_user(username):
    return jsonify(message=f"Hello, {username}!", username=username)
