// The package's public face: the Hookline construct, its props and where its code comes from.
export * from './hookline';
export * from './code';
export { OUTCOMES } from './dashboard';
