// Runs an exported state machine in aws-local-stepfunctions (npm), its Task states calling
// the step adapter process; prints what happened as one line of JSON.
//
// node run.mjs <definition.json> <adapter binary> '<input JSON>'
// The interpreter is loaded from $FSM_ASL_INTERPRETER/node_modules.
import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { pathToFileURL } from 'node:url';

// aws-local-stepfunctions 3 uses Promise.withResolvers (Node 22); Debian's Node is 20.
if (!Promise.withResolvers) {
  Promise.withResolvers = function () {
    let resolve, reject;
    const promise = new Promise((res, rej) => { resolve = res; reject = rej; });
    return { promise, resolve, reject };
  };
}

const [definitionPath, adapterPath, inputText] = process.argv.slice(2);
const dir = process.env.FSM_ASL_INTERPRETER;
const { StateMachine } = await import(
  pathToFileURL(join(dir, 'node_modules/aws-local-stepfunctions/build/main.node.esm.js')).href
);

const adapter = spawn(adapterPath, [], { stdio: ['pipe', 'pipe', 'inherit'] });
const answers = createInterface({ input: adapter.stdout });
const waiting = [];
answers.on('line', (line) => waiting.shift()(JSON.parse(line)));
const ask = (input) => new Promise((resolve) => {
  waiting.push(resolve);
  adapter.stdin.write(JSON.stringify(input) + '\n');
});

const definition = JSON.parse(readFileSync(definitionPath, 'utf8'));
const handlers = {};
const retryIntervalOverrides = {};
for (const [name, state] of Object.entries(definition.States)) {
  if (state.Type !== 'Task') continue;
  retryIntervalOverrides[name] = 0;
  handlers[name] = async (input) => {
    const answer = await ask(input);
    if ('output' in answer) return answer.output;
    const error = new Error(answer.Cause);
    error.name = answer.Error;
    throw error;
  };
}

const machine = new StateMachine(definition, { validationOptions: { checkPaths: false } });
const execution = machine.run(JSON.parse(inputText), {
  overrides: { taskResourceLocalHandlers: handlers, retryIntervalOverrides },
});
const events = [];
const logging = (async () => {
  for await (const event of execution.eventLogs) events.push(event);
})();
let report;
try {
  const output = await execution.result;
  report = { status: 'succeeded', output };
} catch (e) {
  report = { status: 'failed', error: e.cause?.name ?? e.name, cause: e.cause?.message ?? e.message };
}
await logging;
adapter.stdin.end();
report.entered = events.filter((e) => e.type === 'StateEntered').map((e) => e.state.name);
report.retried = events.filter((e) => e.type === 'StateRetried').map((e) => e.state.name);
report.caught = events.filter((e) => e.type === 'StateCaught').map((e) => e.state.name);
console.log(JSON.stringify(report));
