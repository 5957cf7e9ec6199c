#!/usr/bin/env node
// Node.js client for the llm-gateway gRPC API, built from protos/ at run time (no generated code):
// lists models, runs unary and streamed generation, and decodes a refusal's google.rpc details
// (ErrorInfo, RetryInfo, QuotaFailure, BadRequest) from the `grpc-status-details-bin` trailer.
//
// Usage: node client.js [--target HOST:PORT] [--token-file FILE] COMMAND [options]
//   models                              the models the caller's department may use
//   generate --model M --prompt P [--max-tokens N] [--classification C] [--purpose P]
//   stream   --model M --prompt P [...]  the answer as it is produced
// Every result is printed as one JSON object per line; a refusal as {"error": ...}, exit status 1.
'use strict';

const fs = require('node:fs');
const path = require('node:path');
const { parseArgs } = require('node:util');
const grpc = require('@grpc/grpc-js');
const protoLoader = require('@grpc/proto-loader');
const protobuf = require('protobufjs');

const PROTOS = path.resolve(__dirname, '..', '..', 'protos');

function loadService(protos) {
  const definition = protoLoader.loadSync('llmgateway/v1/gateway.proto', {
    includeDirs: [protos],
    keepCase: true,
    enums: String,
    longs: Number,
    defaults: true,
    oneofs: true,
  });
  return grpc.loadPackageDefinition(definition).llmgateway.v1.InferenceService;
}

function loadErrorDetails(protos) {
  const root = new protobuf.Root();
  // google/protobuf/*.proto (Any, Duration) are built into protobufjs; google/rpc is vendored.
  root.resolvePath = (origin, target) =>
    target.startsWith('google/protobuf/') ? target : path.join(protos, target);
  root.loadSync(['google/rpc/status.proto', 'google/rpc/error_details.proto']);
  return root;
}

// The google.rpc.Status in the trailer, its details unpacked from Any to plain objects.
function decodeStatusDetails(root, error) {
  const raw = error.metadata && error.metadata.get('grpc-status-details-bin')[0];
  if (!raw) return [];
  const status = root.lookupType('google.rpc.Status').decode(raw);
  return status.details.map((any) => {
    const typeName = any.type_url.slice(any.type_url.lastIndexOf('/') + 1);
    let type;
    try {
      type = root.lookupType(typeName);
    } catch {
      return { type: typeName };
    }
    const detail = type.toObject(type.decode(any.value), { longs: Number, defaults: true });
    if (typeName === 'google.rpc.RetryInfo') {
      const delay = detail.retry_delay || detail.retryDelay || {};
      detail.retry_after_s = (delay.seconds || 0) + (delay.nanos || 0) / 1e9;
    }
    return { type: typeName, ...detail };
  });
}

function refusal(root, error) {
  return {
    error: {
      code: grpc.status[error.code],
      message: error.details,
      details: decodeStatusDetails(root, error),
    },
  };
}

function request(values) {
  return {
    model: values.model,
    prompt: values.prompt,
    sampling: { max_tokens: Number(values['max-tokens']) },
    classification: values.classification,
    purpose: values.purpose,
  };
}

function main(argv) {
  const { values, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    options: {
      target: { type: 'string', default: '127.0.0.1:50051' },
      'token-file': { type: 'string', default: '.data/dev-token' },
      protos: { type: 'string', default: PROTOS },
      model: { type: 'string', default: 'llama-3.1-8b-instruct' },
      prompt: { type: 'string', default: 'Summarise the ward round' },
      'max-tokens': { type: 'string', default: '64' },
      classification: { type: 'string', default: '' },
      purpose: { type: 'string', default: '' },
      timeout: { type: 'string', default: '60' },
    },
  });
  const InferenceService = loadService(values.protos);
  const details = loadErrorDetails(values.protos);
  const client = new InferenceService(values.target, grpc.credentials.createInsecure());
  const metadata = new grpc.Metadata();
  metadata.set('authorization', `Bearer ${fs.readFileSync(values['token-file'], 'utf8').trim()}`);
  const options = { deadline: Date.now() + Number(values.timeout) * 1000 };
  const print = (object) => process.stdout.write(JSON.stringify(object) + '\n');
  const done = (error) => {
    if (error) {
      print(refusal(details, error));
      process.exitCode = 1;
    }
    client.close();
  };

  switch (positionals[0]) {
    case 'models':
      client.ListModels({}, metadata, options, (error, response) => {
        if (!error) print({ models: response.models });
        done(error);
      });
      break;
    case 'generate':
      client.Generate(request(values), metadata, options, (error, response) => {
        if (!error) print(response);
        done(error);
      });
      break;
    case 'stream': {
      const call = client.GenerateStream(request(values), metadata, options);
      call.on('data', (message) => print(message));
      call.on('error', (error) => done(error));
      call.on('end', () => done(null));
      break;
    }
    default:
      process.stderr.write('usage: node client.js [--target H:P] [--token-file F] models|generate|stream\n');
      process.exitCode = 2;
  }
}

main(process.argv.slice(2));
