// Runs an exported state machine in aws-local-stepfunctions (npm), its Task states calling
// the step adapter process; prints what happened as one line of JSON.
//
// node run.mjs <definition.json> <adapter binary> '<input JSON>' [adapter arguments...]
// The adapter answers one JSON line per request; other lines it prints are ignored.
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

const [definitionPath, adapterPath, inputText, ...adapterArgs] = process.argv.slice(2);
const dir = process.env.FSM_ASL_INTERPRETER;
const { StateMachine } = await import(
  pathToFileURL(join(dir, 'node_modules/aws-local-stepfunctions/build/main.node.esm.js')).href
);

const adapter = spawn(adapterPath, adapterArgs, { stdio: ['pipe', 'pipe', 'inherit'] });
const answers = createInterface({ input: adapter.stdout });
const waiting = [];
answers.on('line', (line) => {
  if (line.startsWith('{')) waiting.shift()(JSON.parse(line));
});
const ask = (input) => new Promise((resolve) => {
  waiting.push(resolve);
  adapter.stdin.write(JSON.stringify(input) + '\n');
});

const definition = JSON.parse(readFileSync(definitionPath, 'utf8'));
const handlers = {};
// Every Task's input as the adapter got it (a waiting Task's: its Payload), in order.
const tasks = [];
const retryIntervalOverrides = {};
// Every Task, the branches' of Parallel and Map states too (the interpreter finds a Task's
// handler by the state's name, at any depth).
const register = (states) => {
  for (const [name, state] of Object.entries(states)) {
    if (state.Type === 'Parallel') {
      for (const branch of state.Branches) register(branch.States);
    }
    if (state.Type === 'Map') register((state.ItemProcessor ?? state.Iterator).States);
    if (state.Type !== 'Task') continue;
    retryIntervalOverrides[name] = 0;
    handlers[name] = async (input) => {
      // A waiting Task's Parameters wrap what its function gets in `Payload`.
      const request = input.Payload ?? input;
      tasks.push(request);
      const answer = await ask(request);
      if ('output' in answer) return answer.output;
      const error = new Error(answer.Cause);
      error.name = answer.Error;
      throw error;
    };
  }
};
register(definition.States);

const machine = new StateMachine(definition, { validationOptions: { checkPaths: false } });
const input = JSON.parse(inputText);
const execution = machine.run(input, {
  overrides: { taskResourceLocalHandlers: handlers, retryIntervalOverrides },
  // The interpreter has no task tokens of its own: a waiting Task's `$$.Task.Token` is this.
  context: { Execution: { Input: input }, Task: { Token: 'interpreter-task-token' } },
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
report.tasks = tasks;
console.log(JSON.stringify(report));
