export { connectApp, MqsecApp, type ConnectAppOptions, type MessageInfo } from './app.js';
