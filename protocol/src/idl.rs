//! Interface descriptions derived from the Rust types that carry each method's parameters.
//!
//! Each method's input and output are structs deriving `zlink::introspect::Type`; the custom
//! types they use derive `zlink::introspect::CustomType`, and the errors
//! `zlink::introspect::ReplyError`. [`InterfaceBuilder`] turns them into IDL text, which the
//! services answer `GetInterfaceDescription` with and a test compares with the checked-in
//! `.varlink` files.

use zlink::idl::{self, Comment, CustomType, Field, Interface, Method, Type};
use zlink::introspect;

/// Collects the members of one interface.
pub struct InterfaceBuilder {
    name: &'static str,
    methods: Vec<Method<'static>>,
    types: Vec<CustomType<'static>>,
    errors: Vec<idl::Error<'static>>,
}

impl InterfaceBuilder {
    pub fn new(name: &'static str) -> Self {
        InterfaceBuilder {
            name,
            methods: Vec::new(),
            types: Vec::new(),
            errors: Vec::new(),
        }
    }

    /// Adds method `name` taking the fields of `In` and returning the fields of `Out`.
    pub fn method<In: introspect::Type, Out: introspect::Type>(
        mut self,
        name: &'static str,
    ) -> Self {
        self.methods.push(method(name, In::TYPE, Out::TYPE, &[]));
        self
    }

    /// Adds a method that supports the `more` flag.
    pub fn method_more<In: introspect::Type, Out: introspect::Type>(
        mut self,
        name: &'static str,
    ) -> Self {
        const MORE: &[Comment<'static>] = &[Comment::new("[Supports 'more' flag]")];
        self.methods.push(method(name, In::TYPE, Out::TYPE, MORE));
        self
    }

    /// Adds a named type.
    pub fn custom_type<T: introspect::CustomType>(mut self) -> Self {
        self.types.push(T::CUSTOM_TYPE.clone());
        self
    }

    /// Adds every error of a `ReplyError` enum.
    pub fn errors<E: introspect::ReplyError>(mut self) -> Self {
        self.errors.extend(E::VARIANTS.iter().map(|e| (*e).clone()));
        self
    }

    /// The interface description in varlink IDL.
    pub fn build(self) -> String {
        match Interface::new_owned(self.name, self.methods, self.types, self.errors, Vec::new()) {
            Ok(interface) => interface.to_string(),
            // The name is a compile-time constant of this crate; a test covers each interface.
            Err(_) => format!("interface {}\n", self.name),
        }
    }
}

fn fields(ty: &'static Type<'static>) -> Vec<Field<'static>> {
    match ty {
        Type::Object(list) => list.iter().cloned().collect(),
        _ => Vec::new(),
    }
}

fn method(
    name: &'static str,
    input: &'static Type<'static>,
    output: &'static Type<'static>,
    comments: &[Comment<'static>],
) -> Method<'static> {
    let built = Method::new_owned(name, fields(input), fields(output), comments.to_vec());
    match built {
        Ok(m) => m,
        // Method names are constants of this crate, checked by the interface tests.
        Err(_) => Method::new_owned("Invalid", Vec::new(), Vec::new(), Vec::new())
            .unwrap_or_else(|_| unreachable!("a constant valid name")),
    }
}
